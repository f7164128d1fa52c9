"""prune keeps what refs reach; concurrent writers and pruners never corrupt a repository."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck, prune
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from tests.store.conftest import make_rich_tree, ostree

CLI = [sys.executable, "-m", "atomicedge.cli.main", "repo"]


def test_prune_refs_only_deletes_exactly_the_unreachable(tmp_path: Path,
                                                         rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    keep = commit_directory(repo, rich_tree(0), branch="keep", timestamp=0)
    drop = commit_directory(repo, rich_tree(1), branch="drop", timestamp=0)
    only_drop = reachable(repo, drop) - reachable(repo, keep)
    assert only_drop
    repo.set_ref("drop", None)
    dry = prune(repo, dry_run=True)
    assert dry.deleted == len(only_drop)
    assert all(repo.has_object(c, t) for c, t in only_drop)
    res = prune(repo)
    assert res.deleted == len(only_drop) and res.freed_bytes > 0
    assert not any(repo.has_object(c, t) for c, t in only_drop)
    assert all(repo.has_object(c, t) for c, t in reachable(repo, keep))
    assert "no errors" in ostree(f"--repo={repo.path}", "fsck").stdout
    assert prune(repo).deleted == 0


def test_prune_keeps_history_of_refs(tmp_path: Path, rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", "bare-user")
    v1 = commit_directory(repo, rich_tree(0), branch="main", timestamp=0)
    commit_directory(repo, rich_tree(1), branch="main", timestamp=1)
    prune(repo)
    assert repo.has_object(v1, ObjectType.COMMIT)
    assert fsck(repo).ok


def test_concurrent_commits_and_prunes_leave_a_valid_repo(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    trees = []
    for i in range(4):
        t = make_rich_tree(tmp_path / f"t{i}", i)
        for j in range(300):
            (t / f"usr/lib/f{j}").write_text(f"{i}-{j}\n")
        trees.append(t)
    procs = [subprocess.Popen([*CLI, "commit", "--repo", str(repo.path), "-b", f"b{i}",
                               str(t)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, t in enumerate(trees)]
    pruners = [subprocess.Popen([*CLI, "prune", "--repo", str(repo.path), "--refs-only"],
                                stdout=subprocess.DEVNULL) for _ in range(3)]
    results = [p.communicate() for p in procs]
    for p in pruners:
        p.wait()
    assert all(p.returncode == 0 for p in procs), [e for _, e in results]
    refs = repo.list_refs()
    assert {f"b{i}": out.decode().strip() for i, (out, _) in enumerate(results)} == refs
    assert fsck(repo).ok
    assert "no errors" in ostree(f"--repo={repo.path}", "fsck").stdout
    for i in range(4):  # every tree still checks out exactly
        ostree(f"--repo={repo.path}", "checkout", f"b{i}", str(tmp_path / f"co{i}"))
