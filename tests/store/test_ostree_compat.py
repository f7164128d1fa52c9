"""Byte compatibility with the real ostree, both directions, in archive, bare and bare-user."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.ostree import inspect as ins
from atomicedge.ostree.checkout import checkout
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.repo import Repo
from tests.store.conftest import manifest, ostree

MODES = ["archive", "bare", "bare-user"]
TS = "2021-06-01T12:00:00Z"
TS_EPOCH = 1622548800


def ostree_commit(repo: Path, tree: Path, *extra: str) -> str:
    out = ostree(f"--repo={repo}", "commit", "-b", "edge/main", f"--timestamp={TS}",
                 "-s", "v1 subject", "-m", "a body\nline two",
                 "--add-metadata-string=version=1.0", *extra, str(tree))
    return out.stdout.strip()


def our_commit(repo: Repo, tree: Path, **kw: object) -> str:
    return commit_directory(repo, tree, branch="edge/main", subject="v1 subject",
                            body="a body\nline two", timestamp=TS_EPOCH,
                            metadata={"version": Variant("s", "1.0")}, **kw)


@pytest.mark.parametrize("mode", MODES)
def test_commit_checksum_equals_ostree_commit(tmp_path: Path, mode: str,
                                              rich_tree: Callable[[int], Path]) -> None:
    tree = rich_tree(0)
    ostree("--repo=" + str(tmp_path / "o"), "init", f"--mode={mode}")
    expected = ostree_commit(tmp_path / "o", tree)
    ours = our_commit(Repo.init(tmp_path / "r", mode), tree)
    assert ours == expected
    # and the same via the CLI with ostree's flag names
    Repo.init(tmp_path / "c", mode)
    rc = main(["repo", "commit", "--repo", str(tmp_path / "c"), "-b", "edge/main",
               "--timestamp", TS, "-s", "v1 subject", "-m", "a body\nline two",
               "--add-metadata-string", "version=1.0", f"--tree=dir={tree}"])
    assert rc == 0
    assert Repo.open(tmp_path / "c").read_ref("edge/main") == expected


@pytest.mark.parametrize("mode", MODES)
def test_no_xattrs_and_orphan_match_ostree(tmp_path: Path, mode: str,
                                           rich_tree: Callable[[int], Path]) -> None:
    tree = rich_tree(1)
    ostree("--repo=" + str(tmp_path / "o"), "init", f"--mode={mode}")
    expected = ostree_commit(tmp_path / "o", tree, "--no-xattrs")
    assert our_commit(Repo.init(tmp_path / "r", mode), tree, xattrs=False) == expected


@pytest.mark.parametrize("mode", MODES)
def test_ostree_accepts_and_reproduces_our_commits(tmp_path: Path, mode: str,
                                                   rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", mode)
    v1 = our_commit(repo, rich_tree(0))
    v2 = commit_directory(repo, rich_tree(1), branch="edge/main", subject="second",
                          timestamp=TS_EPOCH + 60, generate_sizes=True,
                          metadata={"version": Variant("s", "2.0")})
    assert repo.load_commit(v2).parent == v1
    out = ostree(f"--repo={repo.path}", "fsck")
    assert "no errors found" in out.stdout
    for rev, variant in ((v1, 0), (v2, 1)):
        dest = tmp_path / f"co-{variant}"
        ostree(f"--repo={repo.path}", "checkout", rev, str(dest))
        assert manifest(dest) == manifest(tmp_path / f"tree{variant}")
    log = ostree(f"--repo={repo.path}", "log", "edge/main").stdout
    assert "Version: 2.0" in log and "Version: 1.0" in log and "second" in log
    assert ostree(f"--repo={repo.path}", "show", "--print-metadata-key=version",
                  "edge/main").stdout.strip() == "'2.0'"
    binding = ostree(f"--repo={repo.path}", "show", "--print-metadata-key=ostree.ref-binding",
                     v2).stdout
    assert "edge/main" in binding
    assert ostree(f"--repo={repo.path}", "rev-parse", "edge/main^").stdout.strip() == v1


@pytest.mark.parametrize("mode", MODES)
def test_we_read_repos_written_by_ostree(tmp_path: Path, mode: str,
                                         rich_tree: Callable[[int], Path]) -> None:
    o = tmp_path / "o"
    ostree(f"--repo={o}", "init", f"--mode={mode}")
    v1 = ostree_commit(o, rich_tree(0))
    v2 = ostree(f"--repo={o}", "commit", "-b", "edge/main", "-s", "second",
                str(rich_tree(1))).stdout.strip()
    repo = Repo.open(o)
    assert repo.resolve_rev("edge/main") == v2
    assert repo.resolve_rev("edge/main^") == v1
    assert [c for c, _ in ins.history(repo, "edge/main")] == [v2, v1]
    assert ins.cat(repo, v1, "/etc/hostname") == b"edge-0\n"
    our_ls = [e.render() for e in ins.ls(repo, v1, "/usr", recursive=True)]
    their_ls = ostree(f"--repo={o}", "ls", "-R", v1, "/usr").stdout.splitlines()
    assert our_ls == their_ls
    dest = tmp_path / "co"
    checkout(repo, v1, dest)
    assert manifest(dest) == manifest(tmp_path / "tree0")
    ours = ins.diff(repo, v1, v2).render().splitlines()
    theirs = ostree(f"--repo={o}", "diff", v1, v2).stdout.splitlines()
    assert sorted(ours) == sorted(theirs) and ours
    assert fsck(repo).ok


def test_checkout_user_mode_subpath_and_union(tmp_path: Path,
                                              rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", "bare-user")
    v1 = our_commit(repo, rich_tree(0))
    sub = tmp_path / "sub"
    checkout(repo, v1, sub, subpath="/usr/lib/deep", user_mode=True)
    assert (sub / "er/still/leaf.txt").read_text() == "leaf\n" * 10
    assert sorted(p.name for p in sub.iterdir()) == ["dirlink", "er"]
    theirs = tmp_path / "theirs"
    ostree(f"--repo={repo.path}", "checkout", "-U", "--subpath=/usr/lib/deep", v1, str(theirs))
    assert manifest(sub) == manifest(theirs)
    union = tmp_path / "union"
    union.mkdir()
    (union / "keep").write_text("mine")
    (union / "etc").mkdir()
    (union / "etc/hostname").write_text("old")
    checkout(repo, v1, union, union=True)
    assert (union / "keep").read_text() == "mine"
    assert (union / "etc/hostname").read_text() == "edge-0\n"


def test_json_outputs_carry_metadata(tmp_path: Path, rich_tree: Callable[[int], Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    v1 = our_commit(repo, rich_tree(0))
    assert main(["repo", "log", "--repo", str(repo.path), "--json", "edge/main"]) == 0
    log = json.loads(capsys.readouterr().out)
    assert log[0]["checksum"] == v1 and log[0]["version"] == "1.0"
    assert log[0]["metadata"]["ostree.ref-binding"] == ["edge/main"]
    assert main(["repo", "refs", "--repo", str(repo.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"edge/main": v1}
    assert main(["repo", "show", "--repo", str(repo.path), "--json", v1[:10]]) == 0
    assert json.loads(capsys.readouterr().out)["timestamp"] == TS_EPOCH
    assert main(["repo", "fsck", "--repo", str(repo.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
