"""Offline compose (local apt repo of real .debs, network cut): blueprint -> commit, judged by
the real ``ostree`` CLI; recompose reuses the cached tree; package list and diff of commits."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, compose
from atomicedge.compose.validate import parse_text
from atomicedge.ostree.repo import Repo
from tests.compose.offline_repo import KVER

REF = "debian/12/x86_64/edge"
BLUEPRINT = '''
name = "gateway"
description = "offline test gateway"
version = "1.0.0"

[[packages]]
name = "edge-hello"

[customizations]
hostname = "gw-01"

[customizations.kernel]
name = "edge-test-kernel"
append = "quiet console=ttyS0"

[[customizations.group]]
name = "operators"
gid = 2001

[[customizations.user]]
name = "admin"
description = "Administrator"
password = "s3cret"
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests admin@example"
groups = ["operators", "sudo"]
uid = 1500

[[customizations.user]]
name = "root"
password = "$6$fixedsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEF./0123"

[[customizations.sshkey]]
user = "root"
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRootKeyForTests root@example"

[customizations.timezone]
timezone = "Europe/Paris"

[customizations.firewall]
ports = ["8080:tcp", "30000-30010:udp"]

[customizations.firewall.services]
enabled = ["http"]

[customizations.services]
enabled = ["edge-hello.service"]
masked = ["e2scrub_reap.service"]

[[customizations.directories]]
path = "/etc/gateway/conf.d"
mode = "0750"
user = "admin"
group = "operators"
ensure_parents = true

[[customizations.files]]
path = "/etc/gateway/conf.d/site.conf"
data = "site=lab\\n"
mode = "0640"
user = "admin"
group = "operators"
'''
V2_EXTRA = '\n[[packages]]\nname = "edge-agent"\n'


def _atomicedge(*args: str, env: dict[str, str], offline: bool = False) -> str:
    argv = [sys.executable, "-m", "atomicedge.cli.main", *args]
    if offline:
        argv = ["unshare", "-n", *argv]  # no network at all: only the file:// repo
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _ostree(*args: str) -> str:
    return subprocess.run(["ostree", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, apt_repo: Path,
          compose_cache: Path) -> dict[str, object]:
    """v1 composed cold through the CLI with the network cut, then checked out by ostree."""
    work = tmp_path_factory.mktemp("offline")
    (work / "v1.toml").write_text(BLUEPRINT)
    env = dict(os.environ, ATOMICEDGE_CACHE=str(compose_cache.parent / "cache-root"))
    Path(env["ATOMICEDGE_CACHE"]).mkdir(exist_ok=True)
    start = time.monotonic()
    out = _atomicedge("compose", "build", str(work / "v1.toml"), "--repo", str(work / "repo"),
                      "--offline-repo", str(apt_repo), "--profile", "test",
                      "--output", str(work / "v1.tar"), env=env, offline=True)
    seconds = time.monotonic() - start
    commit = out.split()[1]
    _ostree(f"--repo={work / 'repo'}", "checkout", commit, str(work / "co"))
    return {"work": work, "commit": commit, "seconds": seconds, "env": env,
            "co": work / "co", "out": out}


def test_offline_compose_builds_commit_cold_without_network(
        built: dict[str, object]) -> None:
    """Cold (no cached tree), in a network namespace without any network: only the
    file:// apt repo was reachable. (How long it takes is bench/compose.py's business.)"""
    assert "tree cache miss" in str(built["out"])
    repo = Path(str(built["work"])) / "repo"
    assert _ostree(f"--repo={repo}", "rev-parse", REF).strip() == built["commit"]


def test_users_groups_and_hashed_password_in_checked_out_tree(built: dict[str, object]) -> None:
    co = Path(str(built["co"]))
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (co / "usr/etc/passwd").read_text()
              .splitlines()}
    assert passwd["admin"][2:7] == ["1500", "1500", "Administrator", "/home/admin", "/bin/bash"]
    shadow = {ln.split(":")[0]: ln.split(":") for ln in (co / "usr/etc/shadow").read_text()
              .splitlines()}
    crypted = shadow["admin"][1]
    assert crypted.startswith("$6$") and "s3cret" not in (co / "usr/etc/shadow").read_text()
    salt = crypted.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input="s3cret", capture_output=True, text=True, check=True)
    assert again.stdout.strip() == crypted
    groups = {ln.split(":")[0]: ln.split(":") for ln in (co / "usr/etc/group").read_text()
              .splitlines()}
    assert groups["operators"][2] == "2001" and "admin" in groups["operators"][3].split(",")
    assert "admin" in groups["sudo"][3].split(",")
    st = (co / "usr/etc/shadow").stat()
    assert st.st_mode & 0o777 == 0o640
    keys = (co / "usr/lib/tmpfiles.d/atomicedge-users.conf").read_text()
    # created once: keys added on the device later are not overwritten at the next boot
    # ... and under /var directly: /home and /root are links tmpfiles cannot follow yet
    assert "\nd /var/home/admin 0700 admin admin -" in keys
    assert "\nf /var/home/admin/.ssh/authorized_keys 0600 admin admin - ssh-ed25519" in keys
    assert "\nf /var/roothome/.ssh/authorized_keys 0600 root root - ssh-ed25519" in keys
    assert shadow["root"][1].startswith("$6$fixedsalt$")   # an existing hash is kept as is


def test_services_enabled_as_links_and_masked(built: dict[str, object]) -> None:
    co = Path(str(built["co"]))
    link = co / "usr/etc/systemd/system/multi-user.target.wants/edge-hello.service"
    assert os.readlink(link) == "/lib/systemd/system/edge-hello.service"
    assert os.readlink(co / "usr/etc/systemd/system/e2scrub_reap.service") == "/dev/null"


def test_firewalld_zone_has_the_ports(built: dict[str, object]) -> None:
    zone = (Path(str(built["co"])) / "usr/etc/firewalld/zones/public.xml").read_text()
    assert '<port port="8080" protocol="tcp"/>' in zone
    assert '<port port="30000-30010" protocol="udp"/>' in zone
    assert '<service name="http"/>' in zone


def test_files_and_directories_with_owner_and_mode(built: dict[str, object]) -> None:
    co = Path(str(built["co"]))
    d = (co / "usr/etc/gateway/conf.d").stat()
    assert (d.st_uid, d.st_gid, d.st_mode & 0o7777) == (1500, 2001, 0o750)
    f = co / "usr/etc/gateway/conf.d/site.conf"
    st = f.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1500, 2001, 0o640)
    assert f.read_text() == "site=lab\n"


def test_system_settings_and_ostree_layout(built: dict[str, object]) -> None:
    co = Path(str(built["co"]))
    assert (co / "usr/etc/hostname").read_text() == "gw-01\n"
    assert os.readlink(co / "usr/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert (co / "usr/lib/atomicedge/kargs").read_text() == "quiet console=ttyS0\n"
    assert (co / f"usr/lib/modules/{KVER}/vmlinuz").exists()
    assert (co / f"usr/lib/modules/{KVER}/initramfs.img").exists()
    assert not (co / "etc").exists() and list((co / "var").iterdir()) == []
    for name in ("dev", "proc", "sys", "run", "tmp", "boot"):
        assert list((co / name).iterdir()) == [], name
    for name, target in (("home", "var/home"), ("root", "var/roothome"), ("opt", "var/opt"),
                         ("srv", "var/srv"), ("mnt", "var/mnt"), ("media", "run/media"),
                         ("usr/local", "../var/usrlocal"), ("ostree", "sysroot/ostree")):
        assert os.readlink(co / name) == target, name
    assert (co / "usr/etc/machine-id").stat().st_size == 0
    assert (co / "usr/lib/sysimage/dpkg/status").exists()
    tmpfiles = (co / "usr/lib/tmpfiles.d/atomicedge-var.conf").read_text()
    assert "d /var/lib 0755 0 0 -" in tmpfiles
    assert "L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg" in tmpfiles


def test_commit_metadata_version_bootable_linux(built: dict[str, object]) -> None:
    repo = f"--repo={Path(str(built['work'])) / 'repo'}"
    commit = str(built["commit"])
    assert _ostree(repo, "show", "--print-metadata-key=version", commit).strip() == "'1.0.0'"
    assert _ostree(repo, "show", "--print-metadata-key=ostree.bootable", commit).strip() == "true"
    assert _ostree(repo, "show", "--print-metadata-key=ostree.linux",
                   commit).strip() == f"'{KVER}'"


def test_test_profile_commit_is_deployable_by_ostree_admin(built: dict[str, object],
                                                           tmp_path: Path) -> None:
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    _ostree("admin", f"--sysroot={sysroot}", "init-fs", str(sysroot))
    _ostree("admin", f"--sysroot={sysroot}", "os-init", "debian")
    _ostree(f"--repo={sysroot}/ostree/repo", "pull-local",
            str(Path(str(built["work"])) / "repo"), str(built["commit"]))
    _ostree("admin", f"--sysroot={sysroot}", "deploy", "--os=debian",
            "--karg=quiet", str(built["commit"]))
    entries = list((sysroot / "boot/loader/entries").glob("*.conf"))
    assert entries and "ostree=" in entries[0].read_text()


def test_edge_commit_tar_holds_archive_repo_and_compose_json(built: dict[str, object],
                                                             tmp_path: Path) -> None:
    import json
    with tarfile.open(Path(str(built["work"])) / "v1.tar") as tar:
        tar.extractall(tmp_path)
    meta = json.loads((tmp_path / "compose.json").read_text())
    assert meta["ref"] == REF and meta["ostree-commit"] == built["commit"]
    assert "mode=archive" in (tmp_path / "repo/config").read_text().replace(" ", "")
    assert _ostree(f"--repo={tmp_path / 'repo'}", "rev-parse", REF).strip() == built["commit"]
    _ostree(f"--repo={tmp_path / 'repo'}", "fsck")


def test_recompose_reuses_cached_tree_and_gives_same_root_tree(
        built: dict[str, object], apt_repo: Path, tmp_path: Path) -> None:
    env = built["env"]
    assert isinstance(env, dict)
    bp = parse_text(BLUEPRINT, "v1.toml")
    first = Repo.open(Path(str(built["work"])) / "repo")
    root_v1 = first.load_commit(str(built["commit"])).root_tree
    fresh = Repo.init(tmp_path / "fresh", mode="bare")
    res = compose(ComposeRequest(bp, fresh.path, Sources.offline(apt_repo), profile="test",
                                 cache_root=Path(env["ATOMICEDGE_CACHE"]) / "compose"))
    assert res.tree_cached and not res.commit_reused_tree
    assert res.root_tree == root_v1          # same inputs -> byte-identical tree
    # the cached tree was used as is: no package installation step ran at all
    assert not [s for s in res.timings if s.startswith(("mmdebstrap", "apt "))], res.timings
    # same repo again: the parent has the same input hash -> the tree is reused as is
    again = compose(ComposeRequest(bp, fresh.path, Sources.offline(apt_repo), profile="test",
                                   cache_root=Path(env["ATOMICEDGE_CACHE"]) / "compose"))
    assert again.commit_reused_tree and again.root_tree == root_v1
    assert again.parent == res.commit and again.commit != res.commit


def test_packages_list_and_diff_of_chained_commits(
        built: dict[str, object], apt_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = Path(str(built["work"]))
    env = built["env"]
    assert isinstance(env, dict)
    (work / "v2.toml").write_text(BLUEPRINT.replace('"1.0.0"', '"1.1.0"') + V2_EXTRA)
    out = _atomicedge("compose", "build", str(work / "v2.toml"), "--repo", str(work / "repo"),
                      "--offline-repo", str(apt_repo), "--profile", "test",
                      "--parent", str(built["commit"]), env=env, offline=True)
    v2 = out.split()[1]
    assert Repo.open(work / "repo").load_commit(v2).parent == built["commit"]
    assert main(["repo", "packages", "--repo", str(work / "repo"), str(built["commit"])]) == 0
    listing = capsys.readouterr().out
    assert "edge-hello\t1.0\tall" in listing and "edge-agent" not in listing
    assert main(["repo", "packages", "--repo", str(work / "repo"), "--diff",
                 str(built["commit"]), v2]) == 0
    captured = capsys.readouterr()
    assert "+ edge-agent 1.0" in captured.out
    assert "1 added, 0 removed, 0 upgraded" in captured.err


def test_unknown_package_is_reported_by_depsolve_with_line_and_nothing_is_built(
        apt_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bp = tmp_path / "typo.toml"
    bp.write_text('name = "gw"\nversion = "1.0.0"\n\n[[packages]]\nname = "edge-hello"\n\n'
                  '[[packages]]\nname = "edge-helo"\n\n[[groups]]\nname = "no-such-task"\n')
    os.environ["ATOMICEDGE_CACHE"] = str(tmp_path / "cache")
    try:
        rc = main(["compose", "build", str(bp), "--repo", str(tmp_path / "repo"),
                   "--offline-repo", str(apt_repo), "--profile", "test"])
    finally:
        del os.environ["ATOMICEDGE_CACHE"]
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert "line 8: packages[1].name: unknown package 'edge-helo'" in err
    assert "line 11: groups[0].name:" in err and "(hint: " in err
    assert not (tmp_path / "repo").exists()
    assert not list((tmp_path / "cache/compose/trees").glob("*"))


def test_url_parent_is_resolved_from_refs_heads_of_the_remote_repo(
        built: dict[str, object], apt_repo: Path, tmp_path: Path) -> None:
    env = built["env"]
    assert isinstance(env, dict)
    src = Repo.open(Path(str(built["work"])) / "repo")
    tip = src.read_ref(REF)
    bp = parse_text(BLUEPRINT.replace('"1.0.0"', '"1.2.0"'), "v3.toml")
    res = compose(ComposeRequest(bp, tmp_path / "other", Sources.offline(apt_repo),
                                 profile="test", url=f"file://{src.path}",
                                 cache_root=Path(env["ATOMICEDGE_CACHE"]) / "compose"))
    assert res.parent == tip
    assert Repo.open(tmp_path / "other").load_commit(res.commit).parent == tip
