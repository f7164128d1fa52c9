"""Corrupt and hostile repositories: fsck names the bad object, checkout never escapes DEST."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.errors import CorruptionError
from atomicedge.ostree.checkout import checkout
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.objects import Commit, DirMeta, DirTree, FileHeader, ObjectType
from atomicedge.ostree.repo import Repo
from tests.store.conftest import ostree


def _flip(path: Path) -> bytes:
    """Flip one byte in the middle (append one to an empty file); returns the original."""
    data = path.read_bytes()
    if not data:
        path.write_bytes(b"\x01")
        return data
    i = len(data) // 2
    path.chmod(0o644)
    path.write_bytes(data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:])
    return data


@pytest.mark.parametrize("mode", ["archive", "bare", "bare-user"])
def test_flipping_any_byte_makes_fsck_name_that_object(tmp_path: Path, mode: str,
                                                       rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", mode)
    commit_directory(repo, rich_tree(0), branch="main", timestamp=0)
    objects = list(repo.iter_objects())
    assert len(objects) > 20
    checked = 0
    for csum, objtype in objects:
        path = repo.object_path(csum, objtype)
        if path.is_symlink():
            continue  # bare symlink objects have no bytes to flip (covered by retargeting)
        st = os.lstat(path)
        original = _flip(path)
        report = fsck(repo)
        assert csum in {c for c, _t, _w in report.corrupt}, (objtype, path)
        assert not report.ok
        path.write_bytes(original)
        os.chmod(path, st.st_mode & 0o7777)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        checked += 1
    assert checked >= 20
    assert fsck(repo).ok


def test_fsck_cli_names_object_and_exits_1(tmp_path: Path, rich_tree: Callable[[int], Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    v1 = commit_directory(repo, rich_tree(0), branch="main", timestamp=0)
    root_tree = repo.load_commit(v1).root_tree
    _flip(repo.object_path(root_tree, ObjectType.DIR_TREE))
    assert main(["repo", "fsck", "--repo", str(repo.path)]) == 1
    err = capsys.readouterr().err
    assert root_tree in err and "corrupt" in err
    assert "Traceback" not in err


def test_fsck_reports_missing_object(tmp_path: Path, rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", "bare-user")
    v1 = commit_directory(repo, rich_tree(0), branch="main", timestamp=0)
    meta = repo.load_commit(v1).root_meta
    repo.object_path(meta, ObjectType.DIR_META).unlink()
    report = fsck(repo)
    assert (meta, "dirmeta") in {(c, t) for c, t, _n in report.missing}


def _hostile_commit(repo: Repo, name: str) -> str:
    with repo.transaction() as tx:
        payload = tx.write_content(FileHeader(0, 0, 0o100644), b"owned\n")
        root_meta = tx.write_metadata(ObjectType.DIR_META, DirMeta(0, 0, 0o40755).encode())
        tree = tx.write_metadata(ObjectType.DIR_TREE,
                                 DirTree(((name, payload), ("ok.txt", payload))).encode())
        commit = tx.write_metadata(ObjectType.COMMIT, Commit(tree, root_meta).encode())
        tx.set_ref("evil", commit)
    return commit


@pytest.mark.parametrize("name", ["../escaped", "..", ".", "a/b", "/abs"])
@pytest.mark.parametrize("mode", ["archive", "bare"])
def test_checkout_refuses_dirtree_with_traversal_name(tmp_path: Path, name: str,
                                                      mode: str) -> None:
    repo = Repo.init(tmp_path / "r", mode)
    _hostile_commit(repo, name)
    dest = tmp_path / "box" / "dest"
    dest.parent.mkdir()
    with pytest.raises(CorruptionError, match="invalid file name"):
        checkout(repo, "evil", dest)
    assert not dest.exists()  # refused before the first write
    assert sorted(os.listdir(tmp_path)) == ["box", "r"]
    assert main(["repo", "checkout", "--repo", str(repo.path), "evil", str(dest)]) == 1
    assert fsck(repo).corrupt  # and fsck flags the tree


def test_checkout_union_does_not_follow_symlink_in_dest(tmp_path: Path,
                                                        rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    commit_directory(repo, rich_tree(0), branch="main", timestamp=0)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "etc")  # an attacker-planted link where a dir will go
    checkout(repo, "main", dest, union=True)
    assert (dest / "etc").is_dir() and not (dest / "etc").is_symlink()
    assert list(outside.iterdir()) == []


def test_ostree_also_rejects_what_we_flag(tmp_path: Path, rich_tree: Callable[[int], Path]) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    v1 = commit_directory(repo, rich_tree(0), branch="main", timestamp=0)
    _flip(repo.object_path(repo.load_commit(v1).root_tree, ObjectType.DIR_TREE))
    assert ostree(f"--repo={repo.path}", "fsck", check=False).returncode != 0
