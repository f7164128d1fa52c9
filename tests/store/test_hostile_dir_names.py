"""A dirtree whose *directory* entries are named ``..``, ``.``, ``/``-containing or empty.

The older hostile-name tests only ever put the bad name among a dirtree's files.  Here it is a
subdirectory entry (pointing at a valid, empty subtree) and every path that reads dirtrees from
an untrusted source must refuse it before writing: pull (file:// and HTTP), checkout (ours and
the device's hard-link checkout), fsck, and static-delta apply.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from atomicedge.delta import generate as delta
from atomicedge.device.hardlink import checkout as device_checkout
from atomicedge.errors import CorruptionError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree import objects as ob
from atomicedge.ostree.checkout import checkout
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.objects import Commit, FileHeader, ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish.serve import Server
from atomicedge.remote.pull import pull

BAD_NAMES = ["..", ".", "", "a/b", "../escape", "/abs"]
DIRMETA = ob.DirMeta(0, 0, 0o40755).encode()
EMPTY_TREE = gv.encode(ob.DIRTREE_SIG, ([], []))


def _put(repo: Repo, ext: str, data: bytes) -> str:
    csum = hashlib.sha256(data).hexdigest()
    d = repo.objects / csum[:2]
    d.mkdir(exist_ok=True)
    (d / f"{csum[2:]}.{ext}").write_bytes(data)
    return csum


def _evil_repo(path: Path, name: str) -> tuple[Repo, str]:
    """Archive repo, ref ``evil``: root has a file ``ok`` and a DIRECTORY entry ``name``."""
    repo = Repo.init(path, "archive")
    meta = _put(repo, "dirmeta", DIRMETA)
    sub = _put(repo, "dirtree", EMPTY_TREE)
    from atomicedge.ostree.content import encode_filez
    h = FileHeader(0, 0, 0o100644)
    payload = ob.content_checksum(h, b"owned\n")
    d = repo.objects / payload[:2]
    d.mkdir(exist_ok=True)
    (d / f"{payload[2:]}.filez").write_bytes(encode_filez(h, b"owned\n"))
    root = _put(repo, "dirtree", gv.encode(ob.DIRTREE_SIG, (
        [("ok", bytes.fromhex(payload))],
        [(name, bytes.fromhex(sub), bytes.fromhex(meta))])))
    commit = _put(repo, "commit", Commit(root, meta, subject="evil").encode())
    repo.set_ref("evil", commit)
    return repo, commit


def _only_commit_stored(repo: Repo) -> bool:
    return all(t == ObjectType.COMMIT for _c, t in repo.iter_objects())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_dirtree_decoder_refuses_bad_directory_name(name: str) -> None:
    data = gv.encode(ob.DIRTREE_SIG, ([], [(name, b"\1" * 32, b"\2" * 32)]))
    with pytest.raises(CorruptionError, match="invalid file name"):
        ob.DirTree.decode(data)


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("how", ["file", "http"])
def test_pull_refuses_a_directory_named_badly(tmp_path: Path, name: str, how: str) -> None:
    evil, _commit = _evil_repo(tmp_path / "evil", name)
    dst = Repo.init(tmp_path / "dst", "bare-user")
    if how == "file":
        with pytest.raises(CorruptionError, match="invalid file name"):
            pull(dst, f"file://{evil.path}", ["evil"], retries=0)
    else:
        with Server(evil.path) as srv, pytest.raises(CorruptionError, match="invalid file name"):
            pull(dst, srv.url, ["evil"], retries=0)
    assert _only_commit_stored(dst) and dst.read_ref("evil") is None
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_checkout_and_fsck_refuse_a_directory_named_badly(tmp_path: Path, name: str) -> None:
    evil, commit = _evil_repo(tmp_path / "evil", name)
    box = tmp_path / "box"
    box.mkdir()
    with pytest.raises(CorruptionError, match="invalid file name"):
        checkout(evil, "evil", box / "dest")
    with pytest.raises(CorruptionError, match="invalid file name"):
        device_checkout(evil, commit, box / "deploy")
    assert os.listdir(box) == []  # refused before the first write
    report = fsck(evil)
    assert report.corrupt and not report.ok


@pytest.mark.parametrize("name", ["..", ".", "", "a/b"])
def test_static_delta_carrying_a_directory_named_badly_is_refused(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attacker's delta is made by our generator with name checks switched off (as a
    hostile tool would); applying it must refuse before the bad dirtree is stored."""
    evil, commit = _evil_repo(tmp_path / "evil", name)
    with monkeypatch.context() as m:
        m.setattr(ob, "validate_name", lambda n: n)
        made = delta.generate(evil, None, commit, min_fallback_size=0)
    dst = Repo.init(tmp_path / "dst", "bare-user")
    with pytest.raises(CorruptionError, match="invalid file name"):
        delta.apply_offline(dst, made.path / "superblock")
    assert not any(t == ObjectType.DIR_TREE and c != hashlib.sha256(EMPTY_TREE).hexdigest()
                   for c, t in dst.iter_objects())
    # as after a refused pull: at most the commit object, marked partial (ostree does the same)
    assert not dst.has_object(commit, ObjectType.COMMIT) or dst.is_partial(commit)


def test_a_good_tree_with_odd_but_legal_directory_names_still_works(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for n in ("...", ".hidden", "a b", "ünï"):
        (tree / n).mkdir(parents=True)
        (tree / n / "f").write_text(n)
    repo = Repo.init(tmp_path / "r", "archive")
    commit_directory(repo, tree, branch="main")
    checkout(repo, "main", tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(tree))
    assert fsck(repo).ok
