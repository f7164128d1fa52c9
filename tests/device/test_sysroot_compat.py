"""Offline sysroot operations judged by real ``ostree admin`` 2022.7, /etc merge, bad input."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from devhelpers import (
    commit_tiny,
    ostree_status_ids,
    our_status_ids,
    parse_ostree_status,
    parse_our_status,
    tiny_tree,
)

from atomicedge.cli.main import main
from atomicedge.device import deploy as dp
from atomicedge.device import ops
from atomicedge.device import sysroot as sr
from atomicedge.device.origin import Origin
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.repo import Repo


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _ostree(*args: str) -> str:
    p = subprocess.run(["ostree", *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Repo, list[str]]:
    src = Repo.init(tmp_path / "src", "archive")
    v1 = commit_tiny(src, tmp_path, "1")
    rc, _out, err = _cli("device", "install", "--sysroot", str(tmp_path / "s"), "--osname",
                        "testos", "--url", f"file://{tmp_path}/src", "--ref", "testos/stable",
                        "--karg", "root=LABEL=root", "--karg", "rw")
    assert rc == 0, err
    return tmp_path / "s", src, [v1]


def test_real_ostree_status_agrees_through_init_deploy_upgrade_rollback_cleanup(
        installed: tuple[Path, Repo, list[str]], tmp_path: Path) -> None:
    s, src, commits = installed
    assert our_status_ids(s) == ostree_status_ids(s) and len(our_status_ids(s)) == 1
    commits.append(commit_tiny(src, tmp_path, "2", kernel="kernel-2"))
    rc, _out, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc == 0, err
    ids = our_status_ids(s)
    assert ids == ostree_status_ids(s)
    assert [i.split("-", 1)[1].split(".")[0] for i in ids] == [commits[1], commits[0]]
    assert _cli("device", "upgrade", "--sysroot", str(s))[0] == 77  # nothing new
    assert _cli("device", "rollback", "--sysroot", str(s))[0] == 0
    ids = our_status_ids(s)
    assert ids == ostree_status_ids(s) and commits[0] in ids[0]
    assert _cli("device", "cleanup", "-r", "--sysroot", str(s))[0] == 0
    assert our_status_ids(s) == ostree_status_ids(s) and len(our_status_ids(s)) == 1
    commits.append(commit_tiny(src, tmp_path, "3"))
    assert _cli("device", "upgrade", "--sysroot", str(s))[0] == 0
    assert _cli("device", "undeploy", "0", "--sysroot", str(s))[0] == 0
    assert our_status_ids(s) == ostree_status_ids(s) and commits[0] in our_status_ids(s)[0]
    assert _cli("device", "undeploy", "5", "--sysroot", str(s))[0] == 2
    _ostree("fsck", f"--repo={s}/ostree/repo")


def test_real_ostree_admin_deploy_works_on_our_sysroot_and_we_on_its(
        installed: tuple[Path, Repo, list[str]], tmp_path: Path) -> None:
    s, src, commits = installed
    commits.append(commit_tiny(src, tmp_path, "2"))
    _ostree("--repo=" + str(s / "ostree/repo"), "pull-local", str(tmp_path / "src"),
            "testos/stable")
    _ostree("admin", f"--sysroot={s}", "deploy", "--os=testos", "testos/stable")
    assert our_status_ids(s) == ostree_status_ids(s)
    assert commits[1] in our_status_ids(s)[0]
    # and we keep working on the sysroot real ostree just wrote
    sysroot = sr.Sysroot.open(s)
    dp.deploy(sysroot, "testos", commits[0], Origin.new("testos/stable"))
    assert our_status_ids(s) == ostree_status_ids(s)
    assert commits[0] in our_status_ids(s)[0]


def test_we_operate_on_a_sysroot_made_by_real_ostree(tmp_path: Path) -> None:
    s = tmp_path / "s"
    s.mkdir()
    _ostree("admin", "init-fs", str(s))
    _ostree("admin", f"--sysroot={s}", "os-init", "testos")
    repo = Repo.open(s / "ostree/repo")
    v1 = commit_tiny(repo, tmp_path, "1")
    _ostree("admin", f"--sysroot={s}", "deploy", "--os=testos", "--karg=rw", "testos/stable")
    v2 = commit_tiny(repo, tmp_path, "2")
    sysroot = sr.Sysroot.open(s)
    dp.deploy(sysroot, "testos", v2, Origin.new("testos/stable"))
    assert our_status_ids(s) == ostree_status_ids(s)
    assert [i.split("-", 1)[1][:64] for i in our_status_ids(s)] == [v2, v1]
    assert sysroot.deployments()[0].kargs == ("rw",)  # kargs inherited from ostree's entry


def test_etc_three_way_merge_keeps_local_changes(tiny_sysroot: tuple[sr.Sysroot, Path]) -> None:
    sysroot, w = tiny_sysroot
    v1 = commit_tiny(sysroot.repo, w, "1")
    d1 = dp.deploy(sysroot, "testos", v1, Origin.new("testos/stable"))
    etc = sysroot.deployment_dir(d1) / "etc"
    (etc / "hostname").write_text("edge-01\n")
    (etc / "local.conf").write_text("mine\n")
    (etc / "motd").unlink()
    (etc / "sub" / "b.conf").write_text("b\n")
    var_file = sysroot.stateroot("testos") / "var" / "lib" / "data"
    var_file.write_text("state\n")
    v2 = commit_tiny(sysroot.repo, w, "2")
    d2 = dp.deploy(sysroot, "testos", v2, Origin.new("testos/stable"))
    etc2 = sysroot.deployment_dir(d2) / "etc"
    assert (etc2 / "hostname").read_text() == "edge-01\n"
    assert (etc2 / "local.conf").read_text() == "mine\n"
    assert not (etc2 / "motd").exists()
    assert (etc2 / "sub" / "b.conf").read_text() == "b\n"
    assert (etc2 / "release").read_text() == "2\n"        # untouched -> new default
    assert var_file.read_text() == "state\n"               # /var untouched
    assert (sysroot.deployment_dir(d1) / "etc" / "release").read_text() == "1\n"


def _boot_config(s: Path) -> dict[str, str]:
    out = {}
    for p in sorted((s / "boot").rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(s))] = "-> " + str(p.readlink())
        elif p.is_file():
            out[str(p.relative_to(s))] = p.read_text(errors="replace")
    return out


@pytest.mark.parametrize(("argv", "needle"), [
    (["deploy", "0" * 64], "not found in remote"),
    (["deploy", "no/such/ref"], "no such commit"),
    (["rebase", "nosuchremote:testos/stable"], "remote 'nosuchremote' does not exist"),
    (["rebase", "origin:no/such/ref"], "has no ref 'no/such/ref'"),
])
def test_bad_input_is_one_line_error_and_boot_config_unchanged(
        installed: tuple[Path, Repo, list[str]], argv: list[str], needle: str) -> None:
    s, _src, _ = installed
    before = _boot_config(s)
    rc, _out, err = _cli("device", *argv, "--sysroot", str(s))
    assert rc != 0 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert _boot_config(s) == before


def test_corrupt_grubenv_is_reported_and_nothing_changes(
        installed: tuple[Path, Repo, list[str]], tmp_path: Path) -> None:
    s, src, _ = installed
    (s / "boot/grub/grubenv").write_bytes(b"not a grubenv")
    commit_tiny(src, tmp_path, "2")
    before = _boot_config(s)
    rc, _out, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc != 0 and "grubenv" in err and "Traceback" not in err
    assert _boot_config(s) == before


def test_broken_origin_file_is_reported_and_nothing_changes(
        installed: tuple[Path, Repo, list[str]]) -> None:
    s, _src, _ = installed
    sysroot = sr.Sysroot.open(s)
    d = sysroot.deployments()[0]
    sysroot.origin_path(d).write_text("[origin]\nnonsense\n")
    before = _boot_config(s)
    rc, _out, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc != 0 and ".origin" in err and "Traceback" not in err
    assert _boot_config(s) == before


def test_install_from_missing_repo_or_ref_fails_cleanly(tmp_path: Path) -> None:
    rc, _o, err = _cli("device", "install", "--sysroot", str(tmp_path / "s"), "--osname", "os",
                       "--url", f"file://{tmp_path}/nothing", "--ref", "a/b")
    assert rc != 0 and "does not exist" in err
    assert not (tmp_path / "s/boot/loader").exists()
    rc, _o, err = _cli("device", "status", "--sysroot", str(tmp_path / "nope"))
    assert rc != 0 and "not an ostree sysroot" in err


def test_pin_keeps_a_deployment_through_upgrades(
        installed: tuple[Path, Repo, list[str]], tmp_path: Path) -> None:
    s, src, commits = installed
    assert _cli("device", "pin", "0", "--sysroot", str(s))[0] == 0
    for v in ("2", "3"):
        commit_tiny(src, tmp_path, v)
        assert _cli("device", "upgrade", "--sysroot", str(s))[0] == 0
    ids = our_status_ids(s)
    assert len(ids) == 3 and commits[0] in ids[-1] and ids == ostree_status_ids(s)
    _rc, out, _ = _cli("device", "status", "--json", "--sysroot", str(s))
    import json
    deps = json.loads(out)["deployments"]
    assert [d["pinned"] for d in deps] == [False, False, True]
    assert set(deps[0]) >= {"id", "osname", "serial", "checksum", "version", "timestamp",
                            "origin", "booted", "staged", "pinned"}
    assert ops.status(sr.Sysroot.open(s))["deployments"][0]["version"] == "3"


def test_freshly_initialised_sysroot_has_no_deployments_for_both(
        tiny_sysroot: tuple[sr.Sysroot, Path]) -> None:
    sysroot, _w = tiny_sysroot
    assert our_status_ids(sysroot.path) == ostree_status_ids(sysroot.path) == []
    assert (sysroot.stateroot("testos") / "var" / "tmp").stat().st_mode & 0o1777 == 0o1777


# -- the markers of a booted system: real ostree and we, both inside the booted root ---------

REPO_ROOT = Path(__file__).resolve().parents[2]


def _rootable_commit(repo: Repo, workdir: Path, version: str) -> str:
    """A tiny tree that can be a ``/``: the mount points and merged-/usr links of an image."""
    tree = tiny_tree(workdir / f"root-{version}", version, kernel=f"kernel-{version}")
    for d in ("sysroot", "run", "proc", "dev", "boot", "tmp", "usr/lib64", "usr/sbin"):
        (tree / d).mkdir(exist_ok=True)
    for name, target in (("ostree", "sysroot/ostree"), ("bin", "usr/bin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        os.symlink(target, tree / name)
    return commit_directory(repo, tree, branch="testos/stable", subject=f"v{version}",
                            metadata={"version": Variant("s", version)})


def _as_booted(s: Path, deployment: Path, *argv: str) -> str:
    """Run ``argv`` with ``deployment`` as ``/`` the way a booted device has it: the sysroot
    at /sysroot (/ostree -> sysroot/ostree), its /boot, /run/ostree-booted.  A private mount
    namespace + chroot stands in for the boot (nothing of it outlives the command); the host's
    /usr supplies the programs, this checkout of atomicedge is bound at /run/ae."""
    script = "\n".join([
        "set -e", "mount --make-rprivate /",
        f"mount --bind {s} {deployment}/sysroot", f"mount --bind {s}/boot {deployment}/boot",
        f"mount --bind /usr {deployment}/usr", f"mount -t tmpfs tmpfs {deployment}/run",
        f"touch {deployment}/run/ostree-booted", f"mkdir {deployment}/run/ae",
        f"mount --bind {REPO_ROOT} {deployment}/run/ae",
        f"mount --rbind /proc {deployment}/proc", f"mount --rbind /dev {deployment}/dev",
        f"exec chroot {deployment} env PYTHONPATH=/run/ae/src {shlex.join(argv)}"])
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_booted_pinned_and_pending_markers_agree_with_real_ostree_on_a_booted_root(
        tmp_path: Path) -> None:
    src = Repo.init(tmp_path / "src", "archive")
    v1 = _rootable_commit(src, tmp_path, "1")
    s = tmp_path / "s"
    rc, _out, err = _cli("device", "install", "--sysroot", str(s), "--osname", "testos",
                         "--url", f"file://{src.path}", "--ref", "testos/stable")
    assert rc == 0, err
    v2 = _rootable_commit(src, tmp_path, "2")
    assert _cli("device", "upgrade", "--sysroot", str(s))[0] == 0
    assert _cli("device", "pin", "1", "--sysroot", str(s))[0] == 0
    sysroot = sr.Sysroot.open(s)
    deps = sysroot.deployments()
    assert [d.csum for d in deps] == [v2, v1]
    venv_python = f"/run/ae/{Path(sys.executable).relative_to(REPO_ROOT)}"
    ours_cmd = (venv_python, "-m", "atomicedge.cli.main", "device", "status", "--json",
                "--sysroot", "/")
    seen = []
    for booted in reversed(deps):  # boot the rollback (v1, pinned), then the default (v2)
        ddir = sysroot.deployment_dir(booted)
        theirs = parse_ostree_status(_as_booted(s, ddir, "ostree", "admin", "status"))
        ours = parse_our_status(_as_booted(s, ddir, *ours_cmd))
        assert ours == theirs
        seen.append(ours)
    assert seen[0] == [deps[0].id, f"{deps[1].id} booted pinned"]
    assert seen[1] == [f"{deps[0].id} booted", f"{deps[1].id} pinned"]
    assert our_status_ids(s) == ostree_status_ids(s) == [deps[0].id, f"{deps[1].id} pinned"]
