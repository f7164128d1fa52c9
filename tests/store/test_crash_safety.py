"""kill -9 inside a commit, at every step: staging each file and each metadata object, the
syncs, every rename into ``objects/``, the ref update.

Every kill starts from a fresh copy of a repository whose ``main`` is v1, runs the commit of
the v2 tree in a forked child and SIGKILLs it when it reports the chosen step
(``tests/crashkit.py``): a kill counts only if the child reached that step and died of SIGKILL
there, never a commit that finished.  After every kill:

* ``main`` is still v1 before the ref step and the complete v2 after it (real
  ``ostree rev-parse`` reads the same);
* our fsck (which re-hashes every loose object, so a half-written object in ``objects/``
  fails it) and real ``ostree fsck`` pass;
* the commit is run again and succeeds, with the same root tree as an uninterrupted commit
  (parent: whatever ``main`` was), the dead writer's staging directory is gone, and both fscks
  pass again.

A second test does the same on a tree of more than 256 files, whose files are staged by forked
workers: it kills a worker at its first file and mid-way through its files, and the main
process after the staging sync, at the first, middle and last rename and after the ref update.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.repo import Repo
from tests import crashkit
from tests.store.conftest import OSTREE, make_rich_tree, ostree

TIMESTAMP = 1_700_000_000  # fixed: an uninterrupted commit of the same tree has one checksum


def _tree(root: Path, n: int, salt: str) -> Path:
    make_rich_tree(root)  # xattrs, setuid, odd owners, symlinks, empty dirs and files
    # a smaller random file than the rich tree's 3 MiB: every kill runs four fscks
    (root / "usr/lib/big.bin").write_bytes(os.urandom(64 * 1024))
    for i in range(n):
        d = root / "usr/share/many" / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_text(f"{salt} file {i}\n" * (i % 50 + 1))
    return root


@dataclass(frozen=True)
class Setup:
    work: Path
    base: Path   # archive repo, main = v1
    v1: str
    small: Path  # v2 tree: new files in new and old directories, most of the rich tree shared
    big: Path    # v2 tree with 300 new files: staged by forked workers


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    trees = tmp_path_factory.mktemp("crash-trees")  # on disk: the trees carry user xattrs
    with crashkit.scratch("store-crash") as work:
        repo = Repo.init(work / "base", "archive")
        v1 = commit_directory(repo, _tree(trees / "v1", 10, "v1"), branch="main", subject="v1",
                              timestamp=TIMESTAMP)
        small = _tree(trees / "small", 10, "v2")
        (small / "usr/share/many/d0/f0").unlink()  # a deleted file
        big = _tree(trees / "big", 300, "big")
        yield Setup(work, repo.path, v1, small, big)


def _commit(repo: Path, tree: Path) -> Callable[[], str]:
    return lambda: commit_directory(Repo.open(repo), tree, branch="main", subject="v2",
                                    timestamp=TIMESTAMP)


def _fscks(repo_path: Path) -> None:
    """Ours and real ``ostree fsck`` (run side by side)."""
    real = subprocess.Popen([OSTREE or "ostree", f"--repo={repo_path}", "fsck"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        report = fsck(Repo.open(repo_path))
    finally:
        out = real.communicate()[0]
    assert report.ok, report.as_dict()
    assert real.returncode == 0, out


def _reference(s: Setup, tree: Path) -> tuple[list[str], str]:
    """The commit's fault points and the commit it makes, uninterrupted (on a copy)."""
    probe = crashkit.copy_tree(s.base, s.work / f"probe-{tree.name}")
    points = crashkit.record(_commit(probe, tree))
    v2 = Repo.open(probe).read_ref("main")
    assert v2 is not None and v2 != s.v1
    return points, v2


def _assert_lock_free(repo_path: Path) -> None:
    """No survivor of the kill (a forked worker shares the lock's open file description)
    still holds the repository lock: an exclusive lock can be had (within a minute)."""
    fd = os.open(repo_path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK,
                                                               0, 0, 0, 0))
                return
            except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held
                assert time.monotonic() < deadline, "the killed commit's lock is still held"
                time.sleep(0.05)
    finally:
        os.close(fd)


def _check_kill(s: Setup, repo_path: Path, tree: Path, kill: crashkit.Kill, v2: str) -> None:
    moved = "ref-written" in kill.points
    _assert_lock_free(repo_path)
    repo = Repo.open(repo_path)
    assert repo.read_ref("main") == (v2 if moved else s.v1), f"killed at {kill.name}"
    real_ref = ostree(f"--repo={repo_path}", "rev-parse", "main").stdout.strip()
    assert real_ref == (v2 if moved else s.v1)
    _fscks(repo_path)
    # the retry: the same commit again, on what the kill left
    again = _commit(repo_path, tree)()
    repo = Repo.open(repo_path)
    assert repo.read_ref("main") == again
    redone, reference = repo.load_commit(again), repo.load_commit(v2)
    assert (redone.root_tree, redone.root_meta) == (reference.root_tree, reference.root_meta)
    assert redone.parent == (v2 if moved else s.v1)
    assert not [p.name for p in (repo_path / "tmp").iterdir() if p.name.startswith("staging-")]
    _fscks(repo_path)


def test_kill9_at_every_step_of_a_commit_keeps_the_repo_valid_and_a_retry_commits(
        setup: Setup, record_property: Callable[[str, object], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    points, v2 = _reference(setup, setup.small)
    verified = []
    for n in range(1, len(points) + 1):
        repo_path = crashkit.copy_tree(setup.base, setup.work / "r")
        kill = crashkit.kill_at(_commit(repo_path, setup.small), n)
        if kill is None:
            continue  # finished before point n: not a kill
        assert kill.points == tuple(points[:n]), "the commit's steps are not deterministic"
        _check_kill(setup, repo_path, setup.small, kill, v2)
        verified.append(kill)
    steps = {k.name: sum(1 for x in verified if x.name == k.name) for k in verified}
    with capsys.disabled():  # the count shows in every run, not only with -s
        print(f"\ncommit: {len(verified)} verified SIGKILLs out of {len(points)} points {steps}")
    record_property("verified_kills", len(verified))
    assert {"file-staged", "object-staged", "object-renamed", "ref-written"} <= set(steps)
    assert len(verified) == len(points)  # every point of the commit was hit
    assert len(verified) >= 35


def test_kill9_in_a_parallel_commit_keeps_the_repo_valid_and_a_retry_commits(
        setup: Setup, record_property: Callable[[str, object], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    points, v2 = _reference(setup, setup.big)
    renames = [i + 1 for i, p in enumerate(points) if p == "object-renamed"]
    assert len(renames) > 300
    at = [points.index(p) + 1 for p in ("staging-synced", "ref-written")]
    at += [renames[0], renames[len(renames) // 2], renames[-1]]
    verified = []
    for n in sorted(at):
        repo_path = crashkit.copy_tree(setup.base, setup.work / "r")
        kill = crashkit.kill_at(_commit(repo_path, setup.big), n)
        if kill is not None:
            _check_kill(setup, repo_path, setup.big, kill, v2)
            verified.append(kill)
    for nth in (1, 30):  # a forked worker, at its first file and mid-way through its files
        repo_path = crashkit.copy_tree(setup.base, setup.work / "r")
        kill = crashkit.kill_at_nth(_commit(repo_path, setup.big), "file-staged", nth)
        if kill is not None:
            assert kill.in_worker, "files of a big commit are staged by forked workers"
            _check_kill(setup, repo_path, setup.big, kill, v2)
            verified.append(kill)
    with capsys.disabled():  # the count shows in every run, not only with -s
        print(f"\nparallel commit: {len(verified)} verified SIGKILLs ("
              + ", ".join(k.name + (" (worker)" if k.in_worker else "") for k in verified) + ")")
    record_property("verified_kills", len(verified))
    assert len(verified) == len(at) + 2 == 7


def test_a_commit_that_finishes_is_not_counted_as_a_kill(setup: Setup) -> None:
    repo_path = crashkit.copy_tree(setup.base, setup.work / "r")
    assert crashkit.kill_at(_commit(repo_path, setup.small), 10_000) is None
    assert Repo.open(repo_path).read_ref("main") != setup.v1  # it did commit
