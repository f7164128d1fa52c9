"""Pull options: --mirror, --depth, --commit-metadata-only, refs from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from net_helpers import make_tree, ostree_fsck

from atomicedge.cli.main import main
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.remote.pull import pull


@pytest.fixture
def history(tmp_path: Path) -> tuple[Repo, list[str]]:
    tree = make_tree(tmp_path / "tree")
    repo = Repo.init(tmp_path / "src", "archive")
    commits = []
    for v in (1, 2, 3):
        make_tree(tree, v)
        commits.append(commit_directory(repo, tree, branch="main", subject=f"v{v}"))
    commit_directory(repo, tree, branch="other", subject="other")
    pubsum.update(repo)
    return repo, commits


def test_mirror_pulls_every_ref_into_heads_and_copies_the_summary(
        tmp_path: Path, history: tuple[Repo, list[str]]) -> None:
    repo, _commits = history
    dst = Repo.init(tmp_path / "mirror", "archive")
    pull(dst, f"file://{repo.path}", [], mirror=True)
    assert dst.list_refs() == repo.list_refs()
    assert (dst.path / "summary").read_bytes() == (repo.path / "summary").read_bytes()
    ostree_fsck(dst.path)


def test_depth_fetches_parents_and_their_trees(tmp_path: Path,
                                               history: tuple[Repo, list[str]]) -> None:
    repo, (v1, v2, v3) = history
    dst = Repo.init(tmp_path / "d", "bare-user")
    pull(dst, f"file://{repo.path}", ["main"], depth=1)
    assert dst.has_object(v2, ObjectType.COMMIT) and not dst.is_partial(v2)
    assert not dst.has_object(v1, ObjectType.COMMIT)
    dst2 = Repo.init(tmp_path / "d2", "bare-user")
    pull(dst2, f"file://{repo.path}", ["main"], depth=-1)
    assert all(dst2.has_object(c, ObjectType.COMMIT) and not dst2.is_partial(c)
               for c in (v1, v2, v3))
    ostree_fsck(dst2.path)


def test_commit_metadata_only_then_full_pull(tmp_path: Path,
                                             history: tuple[Repo, list[str]]) -> None:
    repo, (_v1, _v2, v3) = history
    dst = Repo.init(tmp_path / "d", "bare-user")
    res = pull(dst, f"file://{repo.path}", ["main"], commit_metadata_only=True)
    assert res.stats.content_fetched == 0 and dst.is_partial(v3)
    assert [t for _c, t in dst.iter_objects()] == [ObjectType.COMMIT]
    pull(dst, f"file://{repo.path}", ["main"])
    assert not dst.is_partial(v3)
    ostree_fsck(dst.path)


def test_cli_pull_json_and_remote_refs(tmp_path: Path, history: tuple[Repo, list[str]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    repo, (_v1, _v2, v3) = history
    dst = Repo.init(tmp_path / "d", "bare-user")
    assert main(["repo", "remote", "add", "--repo", str(dst.path), "--no-gpg-verify",
                 "origin", f"file://{repo.path}"]) == 0
    capsys.readouterr()
    assert main(["repo", "pull", "--repo", str(dst.path), "--json", "origin", "main"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refs"] == {"main": v3} and out["content"] > 0
    assert Repo.open(dst.path).read_ref("origin:main") == v3
    assert main(["repo", "pull", "--repo", str(dst.path), "origin", "nosuchref"]) == 1
