"""Incremental composes: v2 (= v1 + a package) built by apt inside a copy of v1's cached package
tree must give the same tree, and the same OSTree commit tree, as a clean mmdebstrap of v2.

Offline (the local apt repo of real Debian .debs + the test packages), so it runs in seconds:
v1 = minbase + edge-hello (+ the stub kernel), v2 = v1 + edge-agent (which depends on
edge-hello). The clean v2 is composed with a second, empty compose cache. A last compose adds
a package whose maintainer script edits /etc in place: that one must not take the shortcut.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atomicedge.compose import incremental
from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, ComposeResult, Steps, compose
from atomicedge.compose.cache import TreeCache, TreeMeta, installed
from atomicedge.compose.mmdebstrap import unmount_below
from atomicedge.compose.validate import parse_text
from tests.compose import offline_repo

V1 = '''
name = "gateway"
version = "1.0.0"
[[packages]]
name = "edge-hello"
version = "1.0"
[customizations]
hostname = "gw-inc"
[customizations.kernel]
name = "edge-test-kernel"
[[customizations.user]]
name = "admin"
password = "$6$fixedsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEF./0123"
groups = ["sudo"]
'''
# v2 adds a package (edge-agent) and changes one (edge-hello 1.0 -> 1.1)
V2 = V1.replace('version = "1.0.0"', 'version = "1.1.0"').replace(
    'version = "1.0"\n', 'version = "1.1"\n') + '[[packages]]\nname = "edge-agent"\n'
SHELL_PKG = "edge-shell"

# Nothing may differ but the cache's own completion marker. (dpkg's status-old, its backup of
# the status before the last dpkg run, would: both builds drop it, see mmdebstrap.drop_backups.
# Logs: mmdebstrap deletes the dpkg/apt/alternatives logs and the incremental build does the
# same; apt's caches and lists are cleaned by both.)
EXCLUDED = {".atomicedge-complete": "marks a finished cache entry"}


def _excluded(rel: str) -> bool:
    return rel in EXCLUDED


def tree_listing(root: Path) -> dict[str, tuple[object, ...]]:
    """rel path -> (type, mode, uid, gid, content sha256 | symlink target | rdev)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if _excluded(rel):
                continue
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                what: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = st.st_rdev
            else:
                what = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, what)
    return out


def tree_diff(a: Path, b: Path) -> list[str]:
    la, lb = tree_listing(a), tree_listing(b)
    only_a = [f"only in incremental: {p}" for p in sorted(la.keys() - lb.keys())]
    only_b = [f"only in clean: {p}" for p in sorted(lb.keys() - la.keys())]
    differ = [f"differs: {p} {la[p]} != {lb[p]}" for p in sorted(la.keys() & lb.keys())
              if la[p] != lb[p]]
    return only_a + only_b + differ


@pytest.fixture(scope="module")
def offline(apt_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline repo + edge-hello 1.1 (an upgrade: changed script, one more file) +
    edge-shell, whose postinst appends to /etc/shells (order-dependent)."""
    from tests.compose.offline_repo import _deb
    work = tmp_path_factory.mktemp("shellrepo")
    repo = work / "repo"
    repo.mkdir()
    for deb in apt_repo.glob("*.deb"):
        os.link(deb, repo / deb.name)
    unit = ("[Unit]\nDescription=edge hello\n[Service]\nExecStart=/usr/bin/edge-hello\n"
            "[Install]\nWantedBy=multi-user.target\n")
    _deb(work, repo, "edge-hello", "1.1", {
        "usr/bin/edge-hello": ("#!/bin/sh\necho hello from the edge, v1.1\n", 0o755),
        "usr/share/doc/edge-hello/NEWS": ("1.1: a friendlier greeting\n", 0o644),
        "lib/systemd/system/edge-hello.service": (unit, 0o644)})
    _deb(work, repo, SHELL_PKG, "1.0", {"usr/bin/edge-sh": ("#!/bin/sh\nexec sh \"$@\"\n", 0o755),
                                         "DEBIAN/postinst": ("#!/bin/sh\nset -e\n"
                                                             "echo /usr/bin/edge-sh >> "
                                                             "/etc/shells\n", 0o755)})
    return offline_repo.index_repo(repo)


@dataclass
class Composes:
    v1: ComposeResult
    v2_incremental: ComposeResult
    v2_clean: ComposeResult
    cache: Path
    clean_cache: Path
    work: Path
    sources: Sources


class Notes(Steps):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _compose(text: str, repo: Path, sources: Sources, cache: Path,
             parent: str | None = None, steps: Steps | None = None) -> ComposeResult:
    bp = parse_text(text, "bp.toml")
    return compose(ComposeRequest(bp, repo, sources, parent=parent or "none", profile="test",
                                  cache_root=cache), steps)


@pytest.fixture(scope="module")
def composes(offline: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Composes]:
    work = tmp_path_factory.mktemp("incremental")
    sources = Sources.offline(offline)
    cache, clean_cache = work / "cache", work / "clean-cache"
    v1 = _compose(V1, work / "repo", sources, cache)
    v2 = _compose(V2, work / "repo", sources, cache, parent=v1.commit)
    clean = _compose(V2, work / "repo-clean", sources, clean_cache)
    yield Composes(v1, v2, clean, cache, clean_cache, work, sources)
    unmount_below(work)


def _steps(res: ComposeResult, prefix: str) -> list[str]:
    return [name for name in res.timings if name.startswith(prefix)]


def test_v2_after_v1_adds_and_upgrades_in_the_cached_tree_instead_of_mmdebstrap(
        composes: Composes) -> None:
    assert _steps(composes.v1, "mmdebstrap")
    assert _steps(composes.v2_incremental, "apt into cached tree")   # (edge-agent, edge-hello)
    assert "edge-hello" in _steps(composes.v2_incremental, "apt into cached tree")[0]
    assert not _steps(composes.v2_incremental, "mmdebstrap")
    assert _steps(composes.v2_clean, "mmdebstrap")   # the reference really is a clean build


def test_incremental_package_tree_equals_a_clean_build(composes: Composes) -> None:
    key = composes.v2_incremental.tree_key
    assert key == composes.v2_clean.tree_key
    inc = TreeCache(composes.cache).path(key)
    clean = TreeCache(composes.clean_cache).path(key)
    for tree in (inc, clean):
        assert {("edge-agent", "1.0", "all"), ("edge-hello", "1.1", "all")} <= installed(tree)
        assert "v1.1" in (tree / "usr/bin/edge-hello").read_text()
    assert tree_diff(inc, clean) == []


def test_incremental_commit_has_the_clean_commits_root_tree(composes: Composes) -> None:
    """Same dirtree checksum: every path, mode, owner, xattr, content and symlink outside /var
    (which ostreeprep empties) is the same; checked with the real ostree too."""
    assert composes.v2_incremental.root_tree == composes.v2_clean.root_tree
    ls = [subprocess.run(["ostree", f"--repo={repo}", "ls", "-R", "-C", commit],
                         capture_output=True, text=True, check=True).stdout
          for repo, commit in ((composes.work / "repo", composes.v2_incremental.commit),
                               (composes.work / "repo-clean", composes.v2_clean.commit))]
    assert ls[0] == ls[1]


def test_incremental_tree_is_cached_under_the_full_key(composes: Composes,
                                                       tmp_path: Path) -> None:
    again = _compose(V2, tmp_path / "repo", composes.sources, composes.cache)
    assert again.tree_cached and again.root_tree == composes.v2_incremental.root_tree
    meta = TreeCache(composes.cache).meta(again.tree_key)
    assert meta is not None and "edge-agent" in {p[0] for p in meta.packages}


def _meta(packages: dict[str, str], includes: list[str], sources: str = "s") -> TreeMeta:
    return TreeMeta("debian-12", "bookworm", "amd64", "test", sources, tuple(includes),
                    tuple((n, v, "amd64") for n, v in sorted(packages.items())))


def test_plan_picks_the_closest_subset_base_and_never_one_with_removals() -> None:
    want = _meta({"a": "1", "b": "2", "c": "1", "d": "1"}, ["a", "c", "d"])
    far = _meta({"a": "1"}, ["a"])
    near = _meta({"a": "1", "b": "1", "c": "1"}, ["a", "c"])          # b upgraded, d added
    removal = _meta({"a": "1", "b": "2", "c": "1", "x": "1"}, ["a", "c"])
    other_sources = _meta({"a": "1", "b": "2", "c": "1"}, ["a", "c"], sources="t")
    manual_lost = _meta({"a": "1", "b": "2", "c": "1"}, ["a", "b", "c"])  # b would stay manual
    p = incremental.plan([("far", far), ("near", near), ("removal", removal),
                          ("other", other_sources), ("manual", manual_lost)], want)
    assert p is not None and p.base == "near"
    assert p.added == ("d",) and p.changed == ("b",)
    assert p.install == ("d", "b=2") and p.auto == ("b",)   # b was a dependency: stays auto
    assert incremental.plan([("removal", removal), ("other", other_sources)], want) is None


def test_maintainer_script_editing_etc_in_place_falls_back_to_a_clean_build(
        composes: Composes, tmp_path: Path) -> None:
    """v1 + edge-shell: appending to /etc/shells depends on install order, so the shortcut is
    refused, the tree is built by mmdebstrap, and the compose still succeeds."""
    steps = Notes()
    v3 = _compose(V1 + f'[[packages]]\nname = "{SHELL_PKG}"\n', tmp_path / "repo",
                  composes.sources, composes.cache, steps=steps)
    refusal = [n for n in steps.notes if "refused" in n]
    assert refusal and "/etc/shells" in refusal[0], steps.notes
    assert _steps(v3, "mmdebstrap") and not _steps(v3, "apt into cached tree")
    shells = (TreeCache(composes.cache).path(v3.tree_key) / "etc/shells").read_text()
    assert "/usr/bin/edge-sh" in shells.splitlines()


def _newc(names: list[str]) -> bytes:
    """A newc cpio archive of empty files (what dracut writes, minus the content)."""
    out = b""
    for ino, name in enumerate([*names, "TRAILER!!!"], 1):
        raw = name.encode() + b"\0"
        fields = [ino, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4)
    return out


def test_initramfs_is_rebuilt_only_when_new_files_feed_it(tmp_path: Path) -> None:
    """The dracut decision: files in the image, initramfs inputs, or binaries a module's
    check() probes force a rebuild; anything else (strace) keeps the base's initramfs."""
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/dracut").write_text("")
    mod = tree / "usr/lib/dracut/modules.d/90lvm"
    mod.mkdir(parents=True)
    (mod / "module-setup.sh").write_text("check() {\n    require_binaries lvm || return 1\n"
                                         "}\n\ninstall() {\n    inst_multiple strace\n}\n")
    early = _newc(["kernel/x86/microcode/GenuineIntel.bin"])   # uncompressed early cpio
    main = gzip.compress(_newc(["usr/bin/systemctl", "lib/libc.so.6"]))
    (tree / "boot/initrd.img-6.1").write_bytes(early + b"\0" * 512 + main)
    image = incremental._initramfs_files(tree)
    assert image == {"kernel/x86/microcode/GenuineIntel.bin", "usr/bin/systemctl",
                     "usr/lib/libc.so.6"}
    affected = incremental.initramfs_affected
    assert affected(tree, {"usr/bin/strace", "usr/share/doc/strace/copyright"}, image) is None
    assert "in the initramfs" in str(affected(tree, {"usr/lib/libc.so.6"}, image))
    assert "checks for lvm" in str(affected(tree, {"usr/sbin/lvm"}, image))
    assert "initramfs input" in str(affected(tree, {"usr/lib/modules/6.1/x.ko"}, image))
