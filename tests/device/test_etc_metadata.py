"""/etc keeps owner, group, mode and xattrs on deploy and on the three-way merge: the /etc of
our deployment and of one made by real ``ostree admin deploy`` (2022.7) from the same commit
are identical - content, type, owner, group, mode (suid/sticky included) and every xattr -
after the first deploy and after an upgrade with the same local edits made in both.

Two sets of commits: tiny ones made here with blueprint-like /etc content (files and
directories owned by several users and groups, modes 0640/0750/0600/0440, setgid and sticky
directories, symlinks, ``user.*`` and ``security.*`` xattrs, shadow/gshadow of group shadow),
and the composed gateway images v1 -> v2 of tests/images.py (the blueprint's /etc/gateway
owned by core:operators, Debian's shadow files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devhelpers import tiny_tree

from atomicedge.cli.main import main
from atomicedge.device import deploy as dp
from atomicedge.device import etcmerge, fetch
from atomicedge.device import sysroot as sr
from atomicedge.device.origin import Origin
from atomicedge.errors import UsageError
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.repo import Repo
from atomicedge.remote import config as remotes

CORE, OPERATORS, SHADOW, ADM = 1000, 1001, 42, 4
REF = "testos/stable"

Entry = tuple[str, int, int, int, str, tuple[tuple[str, bytes], ...]]


def _put(root: Path, rel: str, text: str | None, mode: int, uid: int = 0, gid: int = 0,
         xattrs: dict[str, bytes] | None = None, link: str | None = None) -> None:
    """A file (text), directory (text None) or symlink (link) with its metadata."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if link is not None:
        os.symlink(link, p)
    elif text is None:
        p.mkdir(exist_ok=True)
    else:
        p.write_text(text)
    os.chown(p, uid, gid, follow_symlinks=False)
    if link is None:
        os.chmod(p, mode)
    for name, value in (xattrs or {}).items():
        os.setxattr(p, name, value, follow_symlinks=False)


def _etc_defaults(etc: Path, version: str) -> None:
    """What a blueprint and the base put in /usr/etc (v2 changes some defaults)."""
    v2 = version == "2"
    _put(etc, "shadow", "root:*:19000:0:99999:7:::\ncore:!:19000::::::\n", 0o640, 0, SHADOW)
    _put(etc, "gshadow", "root:*::\noperators:!::core\n", 0o640, 0, SHADOW)
    _put(etc, "gateway", None, 0o755 if v2 else 0o750, CORE, OPERATORS,
         {"user.atomicedge.dir": b"gateway"})
    _put(etc, "gateway/app.conf", f"listen = 8080\nversion = {version}\n", 0o640, CORE,
         OPERATORS, {"user.atomicedge.origin": b"blueprint",
                     "security.atomicedge": b"label-app"})
    _put(etc, "gateway/secret.key", "s3cr3t\n", 0o600, CORE, CORE,
         {"security.atomicedge": b"label-secret"})
    _put(etc, "gateway/current", None, 0, CORE, OPERATORS, link="app.conf")
    _put(etc, "gateway/run", None, 0o1770 if v2 else 0o2770, CORE, OPERATORS)
    _put(etc, "sub", None, 0o700 if v2 else 0o755, 0, 0)
    _put(etc, "sudoers.d", None, 0o750, 0, 0)
    _put(etc, "sudoers.d/core", "core ALL=(ALL) NOPASSWD: ALL\n", 0o440, 0, 0)
    _put(etc, "motd", "welcome\n", 0o644, 0, ADM if v2 else 0)
    if v2:
        _put(etc, "gateway/new.conf", "fresh default\n", 0o644, CORE, OPERATORS)


def _commit(repo: Repo, work: Path, version: str) -> str:
    tree = tiny_tree(work / f"tree-{version}", version)
    _etc_defaults(tree / "usr/etc", version)
    return commit_directory(repo, tree, branch=REF, subject=f"v{version}",
                            metadata={"version": Variant("s", version)})


def _local_edits(etc: Path) -> None:
    """What an admin does on the device between the two deploys."""
    app = etc / "gateway/app.conf"
    app.write_text("listen = 9090\n")                 # modified: content, owner and mode
    os.chown(app, 1002, 1003)
    os.chmod(app, 0o600)
    os.chmod(etc / "hostname", 0o600)                 # modified: mode only
    os.chown(etc / "sub", CORE, CORE)                 # dir metadata only (ostree: not kept)
    os.setxattr(etc / "release", "user.local", b"x")  # xattr only (ostree ignores xattrs)
    _put(etc, "gateway/local.conf", "mine\n", 0o640, CORE, OPERATORS,
         {"user.atomicedge.origin": b"admin"})        # added file, in a changed-default dir
    _put(etc, "site", None, 0o700, 1005, 1005)        # added directory tree
    _put(etc, "site/token", "t\n", 0o600, 1005, 1005, {"security.atomicedge": b"label-t"})
    _put(etc, "site/link", None, 0, 1005, 1005, link="token")
    (etc / "app.conf").unlink()                       # deleted
    (etc / "gateway/current").unlink()                # symlink retargeted
    _put(etc, "gateway/current", None, 0, CORE, OPERATORS, link="secret.key")
    (etc / ".updated").write_text("systemd-update-done\n")


def _snapshot(root: Path) -> dict[str, Entry]:
    """Everything the comparison covers, for every entry below ``root``."""
    out: dict[str, Entry] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if name == "." and rel != ".":
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                body = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                body = ""
            xattrs = tuple((n, os.getxattr(p, n, follow_symlinks=False))
                           for n in sorted(os.listxattr(p, follow_symlinks=False)))
            out[rel] = (stat.filemode(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, body, xattrs)
    return out


def _ostree(*args: str) -> str:
    p = subprocess.run(["ostree", *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _cli(*argv: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    assert rc == 0, err.getvalue()


def _default_etc(sysroot: Path) -> Path:
    """/etc of the default (first) deployment, from the live BLS entry."""
    entries = sorted((sysroot / "boot/loader/entries").glob("*.conf"))
    newest = max(entries, key=lambda e: int(e.read_text().split("version ")[1].split()[0]))
    arg = newest.read_text().split("ostree=")[1].split()[0]
    return (sysroot / arg.lstrip("/")).resolve() / "etc"


@pytest.fixture
def two_sysroots(tmp_path: Path) -> Iterator[tuple[Path, Path, Repo]]:
    """Ours (``atomicedge device install``) and real ostree's, both from commit v1 of ``src``."""
    src = Repo.init(tmp_path / "src", "archive")
    _commit(src, tmp_path, "1")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _cli("device", "install", "--sysroot", str(ours), "--osname", "testos",
         "--url", f"file://{src.path}", "--ref", REF, "--karg", "rw")
    theirs.mkdir()
    _ostree("admin", "init-fs", str(theirs))
    _ostree("admin", f"--sysroot={theirs}", "os-init", "testos")
    _ostree(f"--repo={theirs}/ostree/repo", "pull-local", str(src.path), REF)
    _ostree("admin", f"--sysroot={theirs}", "deploy", "--os=testos", "--karg=rw", REF)
    yield ours, theirs, src
    for s in (ours, theirs):  # deployment roots are immutable (chattr +i), as ostree makes them
        for d in (s / "ostree/deploy/testos/deploy").glob("*.[0-9]"):
            subprocess.run(["chattr", "-i", str(d)], capture_output=True)


def test_first_deploy_etc_is_identical_to_real_ostree_with_owners_modes_and_xattrs(
        two_sysroots: tuple[Path, Path, Repo]) -> None:
    ours, theirs, _src = two_sysroots
    mine, real = _snapshot(_default_etc(ours)), _snapshot(_default_etc(theirs))
    assert mine == real
    # and it is the commit's metadata, not something both sides lost
    assert mine["shadow"][1:4] == (0o640, 0, SHADOW)
    assert mine["gshadow"][1:4] == (0o640, 0, SHADOW)
    assert mine["gateway"][1:4] == (0o750, CORE, OPERATORS)
    assert mine["gateway/app.conf"][1:4] == (0o640, CORE, OPERATORS)
    assert dict(mine["gateway/app.conf"][5]) == {"security.atomicedge": b"label-app",
                                                 "user.atomicedge.origin": b"blueprint"}
    assert dict(mine["gateway"][5]) == {"user.atomicedge.dir": b"gateway"}
    assert mine["gateway/run"][1] == 0o2770
    assert mine["gateway/current"][2:5] == (CORE, OPERATORS, "-> app.conf")
    assert mine["sudoers.d/core"][1] == 0o440


def test_upgrade_merge_with_local_edits_is_identical_to_real_ostree(
        two_sysroots: tuple[Path, Path, Repo], tmp_path: Path) -> None:
    ours, theirs, src = two_sysroots
    _local_edits(_default_etc(ours))
    _local_edits(_default_etc(theirs))
    v2 = _commit(src, tmp_path, "2")
    _cli("device", "deploy", v2, "--sysroot", str(ours))
    _ostree(f"--repo={theirs}/ostree/repo", "pull-local", str(src.path), REF)
    _ostree("admin", f"--sysroot={theirs}", "deploy", "--os=testos", REF)
    assert v2 in str(_default_etc(ours)) and v2 in str(_default_etc(theirs))
    mine, real = _snapshot(_default_etc(ours)), _snapshot(_default_etc(theirs))
    assert mine == real
    # the local edits won, with their metadata ...
    assert mine["gateway/app.conf"][1:4] == (0o600, 1002, 1003)
    assert mine["hostname"][1] == 0o600
    assert mine["gateway/local.conf"][1:4] == (0o640, CORE, OPERATORS)
    assert dict(mine["gateway/local.conf"][5]) == {"user.atomicedge.origin": b"admin"}
    assert mine["site"][1:4] == (0o700, 1005, 1005)
    assert dict(mine["site/token"][5]) == {"security.atomicedge": b"label-t"}
    assert mine["gateway/current"][4] == "-> secret.key"
    assert "app.conf" not in mine and ".updated" not in mine
    # ... the parent of a local change keeps the admin's metadata (ostree's rule), while
    # untouched entries follow the new defaults
    assert mine["gateway"][1] == 0o750
    assert mine["gateway/new.conf"][1:4] == (0o644, CORE, OPERATORS)
    assert mine["motd"][3] == ADM
    assert mine["gateway/run"][1] == 0o1770
    assert mine["sub"][1:4] == (0o700, 0, 0)
    assert mine["shadow"][1:4] == (0o640, 0, SHADOW)


def _composed_edits(etc: Path) -> None:
    app = etc / "gateway/app.conf"
    app.write_text("listen = 0.0.0.0:9090\n")
    os.chown(app, 1002, 1003)
    os.chmod(app, 0o600)
    os.chmod(etc / "hostname", 0o600)
    _put(etc, "gateway/local.conf", "mine\n", 0o640, CORE, 2001, {"user.atomicedge": b"admin"})
    _put(etc, "site", None, 0o700, 1005, 1005)
    _put(etc, "site/token", "t\n", 0o600, 1005, 1005, {"security.atomicedge": b"label-t"})
    (etc / "issue.net").unlink()
    (etc / ".updated").write_text("systemd-update-done\n")


def test_composed_gateway_images_etc_is_identical_to_real_ostree_on_deploy_and_upgrade(
        gateway_images: Any, tmp_path: Path) -> None:
    gw, osname = gateway_images, "edge"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    sysroot = sr.init_fs(ours)
    sr.os_init(sysroot, osname)
    remotes.add(sysroot.repo, "origin", f"file://{gw.repo}", gpg_verify=False)
    fetch.pull(sysroot.repo, "origin", gw.ref, commit=gw.v1)
    dp.deploy(sysroot, osname, gw.v1, Origin.new(f"origin:{gw.ref}"), ["rw"])
    theirs.mkdir()
    _ostree("admin", "init-fs", str(theirs))
    _ostree("admin", f"--sysroot={theirs}", "os-init", osname)
    _ostree(f"--repo={theirs}/ostree/repo", "pull-local", str(gw.repo), gw.v1)
    _ostree("admin", f"--sysroot={theirs}", "deploy", f"--os={osname}", "--karg=rw", gw.v1)
    try:
        mine = _snapshot(_default_etc(ours))
        assert mine == _snapshot(_default_etc(theirs))
        assert mine["gateway"][1:4] == (0o750, CORE, 2001)            # core:operators
        assert mine["gateway/app.conf"][1:4] == (0o640, CORE, 2001)
        assert mine["shadow"][1:4] == (0o640, 0, SHADOW)
        assert mine["gshadow"][1:4] == (0o640, 0, SHADOW)
        _composed_edits(_default_etc(ours))
        _composed_edits(_default_etc(theirs))
        _cli("device", "deploy", gw.v2, "--sysroot", str(ours))
        _ostree(f"--repo={theirs}/ostree/repo", "pull-local", str(gw.repo), gw.v2)
        _ostree("admin", f"--sysroot={theirs}", "deploy", f"--os={osname}", gw.v2)
        assert gw.v2 in str(_default_etc(ours)) and gw.v2 in str(_default_etc(theirs))
        mine = _snapshot(_default_etc(ours))
        assert mine == _snapshot(_default_etc(theirs))
        assert mine["gateway/app.conf"][1:4] == (0o600, 1002, 1003)
        assert mine["gateway/local.conf"][1:4] == (0o640, CORE, 2001)
        assert mine["site/token"][5] == (("security.atomicedge", b"label-t"),)
        assert "issue.net" not in mine and ".updated" not in mine
        assert mine["shadow"][1:4] == (0o640, 0, SHADOW)
    finally:
        for s in (ours, theirs):
            for d in (s / f"ostree/deploy/{osname}/deploy").glob("*.[0-9]"):
                subprocess.run(["chattr", "-i", str(d)], capture_output=True)


def test_changed_file_where_new_defaults_have_a_directory_is_refused(tmp_path: Path) -> None:
    old_usr, old_etc, new = tmp_path / "usr-etc", tmp_path / "etc", tmp_path / "new"
    for d in (old_usr, old_etc, new):
        d.mkdir()
    (old_usr / "foo").write_text("a\n")
    (old_etc / "foo").write_text("edited\n")
    (new / "foo").mkdir()
    with pytest.raises(UsageError, match="/etc/foo was changed locally but the new version"):
        etcmerge.merge(old_usr, old_etc, new)


def test_local_changes_below_a_directory_that_became_a_symlink_are_never_written_through_it(
        tmp_path: Path) -> None:
    old_usr, old_etc, new = tmp_path / "usr-etc", tmp_path / "etc", tmp_path / "new"
    outside = tmp_path / "outside"
    for d in (old_usr / "d", old_etc / "d", new, outside):
        d.mkdir(parents=True)
    (old_usr / "d/x").write_text("a\n")
    (old_etc / "d/x").write_text("edited\n")
    (old_etc / "d/gone").write_text("keep me\n")
    (old_usr / "d/gone").write_text("keep me\n")
    os.unlink(old_etc / "d/gone")
    (outside / "gone").write_text("outside\n")
    os.symlink(str(outside), new / "d")
    with pytest.raises(UsageError, match="/etc/d has local changes below it"):
        etcmerge.merge(old_usr, old_etc, new)
    assert sorted(os.listdir(outside)) == ["gone"]
    assert (outside / "gone").read_text() == "outside\n"
    shutil.rmtree(tmp_path / "etc")
