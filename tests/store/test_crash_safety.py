"""kill -9 during a commit never leaves a repo that either fsck rejects, nor moves the ref."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.repo import Repo
from tests.store.conftest import make_rich_tree, ostree

ATOMICEDGE = [sys.executable, "-m", "atomicedge.cli.main"]


def _many_files_tree(root: Path, n: int, salt: str) -> Path:
    make_rich_tree(root)
    for i in range(n):
        d = root / "usr/share/many" / f"d{i % 17}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_text(f"{salt} file {i}\n" * (i % 50 + 1))
    return root


def _commit_cmd(repo: Path, tree: Path) -> list[str]:
    return [*ATOMICEDGE, "repo", "commit", "--repo", str(repo), "-b", "main",
            "-s", "crashy", str(tree)]


def _assert_consistent(repo_path: Path, expected_ref: str, *, may_advance: bool = False) -> None:
    """Both fscks pass; the ref is unchanged, or (killed after the ref moved but before the
    checksum was printed) it points at a complete child commit of the old one."""
    out = ostree(f"--repo={repo_path}", "fsck", check=False)
    assert out.returncode == 0, out.stderr
    repo = Repo.open(repo_path)
    assert fsck(repo).ok
    ref = repo.read_ref("main")
    if may_advance and ref != expected_ref:
        assert ref is not None and repo.load_commit(ref).parent == expected_ref
        return
    assert ref == expected_ref


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    base = tmp_path_factory.mktemp("crash")
    repo = Repo.init(base / "repo", "archive")
    v1 = commit_directory(repo, _many_files_tree(base / "t1", 50, "v1"), branch="main",
                          subject="v1")
    tree2 = _many_files_tree(base / "t2", 600, "v2")  # ~640 objects to rename
    tree3 = _many_files_tree(base / "t3", 30, "v3")
    return repo.path, tree2, tree3, v1


@pytest.mark.parametrize("step", [1, 2, 50, 300, 640, 10_000])
def test_kill9_at_each_rename_step_keeps_repo_valid(crash_env: tuple[Path, Path, Path, str],
                                                    step: int) -> None:
    repo_path, tree2, tree3, _ = crash_env
    before = Repo.open(repo_path).read_ref("main")
    assert before is not None
    env = {**os.environ, "ATOMICEDGE_CRASH_AT": str(step)}
    proc = subprocess.run(_commit_cmd(repo_path, tree2), env=env, capture_output=True)
    if proc.returncode == 0:
        # the crash point lay beyond this commit's steps: it completed normally
        before = Repo.open(repo_path).read_ref("main")
    else:
        assert proc.returncode == 137
    _assert_consistent(repo_path, before or "")
    # and the repo still accepts commits
    after = subprocess.run(_commit_cmd(repo_path, tree3), capture_output=True, text=True)
    assert after.returncode == 0, after.stderr
    _assert_consistent(repo_path, after.stdout.strip())


def test_kill9_at_random_moments_keeps_repo_valid(crash_env: tuple[Path, Path, Path, str]) -> None:
    repo_path, tree2, tree3, _ = crash_env
    seed = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    t0 = time.monotonic()
    subprocess.run(_commit_cmd(repo_path, tree2), check=True, capture_output=True)
    duration = time.monotonic() - t0
    for i in range(16):
        # a fresh tree each round so every commit has real work to do
        tree = _many_files_tree(repo_path.parent / f"r{i}", 300, f"round{i}-{seed}")
        before = Repo.open(repo_path).read_ref("main")
        proc = subprocess.Popen(_commit_cmd(repo_path, tree), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, duration))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        expected = out.decode().strip() if proc.returncode == 0 else before
        assert expected
        try:
            _assert_consistent(repo_path, expected, may_advance=proc.returncode != 0)
        except AssertionError as exc:
            raise AssertionError(f"round {i}, seed {seed}: {exc}") from exc
    ok = subprocess.run(_commit_cmd(repo_path, tree3), capture_output=True, text=True)
    assert ok.returncode == 0
