"""Must show 5: hostile repositories are refused with a clear error and bounded memory."""

from __future__ import annotations

import hashlib
import lzma
import resource
import zlib
from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.delta import format as df
from atomicedge.errors import AtomicEdgeError, CorruptionError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree import objects as ob
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import Commit, FileHeader, ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.remote.pull import pull

DIRMETA = ob.DirMeta(0, 0, 0o40755).encode()


def _put(repo: Repo, ext: str, data: bytes, name: str | None = None) -> str:
    csum = name or hashlib.sha256(data).hexdigest()
    d = repo.objects / csum[:2]
    d.mkdir(exist_ok=True)
    (d / f"{csum[2:]}.{ext}").write_bytes(data)
    return csum


def _evil_repo(tmp_path: Path, files: list[tuple[str, str]],
               dirs: list[tuple[str, str, str]] | None = None) -> tuple[Repo, str]:
    """An archive repo whose ``evil`` ref points at a hand-made commit."""
    repo = Repo.init(tmp_path / "evil", "archive")
    meta = _put(repo, "dirmeta", DIRMETA)
    tree = gv.encode(ob.DIRTREE_SIG, ([(n, bytes.fromhex(c)) for n, c in files],
                                      [(n, bytes.fromhex(t), bytes.fromhex(m))
                                       for n, t, m in dirs or []]))
    root = _put(repo, "dirtree", tree)
    commit = _put(repo, "commit", Commit(root, meta, subject="evil").encode())
    repo.set_ref("evil", commit)
    return repo, commit


def _dst(tmp_path: Path) -> Repo:
    return Repo.init(tmp_path / "dst", "bare-user")


def _nothing_stored(repo: Repo) -> bool:
    return all(t == ObjectType.COMMIT for _c, t in repo.iter_objects())


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "."])
def test_dirtree_with_traversal_name_is_refused(tmp_path: Path, name: str) -> None:
    h = FileHeader(0, 0, 0o100644)
    content = b"owned\n"
    good = ob.content_checksum(h, content)
    evil, _c = _evil_repo(tmp_path, [(name, good)])
    from atomicedge.ostree.content import encode_filez
    _put(evil, "filez", encode_filez(h, content), good)
    dst = _dst(tmp_path)
    with pytest.raises(CorruptionError, match="invalid file name"):
        pull(dst, f"file://{evil.path}", ["evil"], retries=0)
    assert _nothing_stored(dst)
    assert not (tmp_path / "escape").exists()


def test_malformed_and_oversized_summary_are_refused(tmp_path: Path,
                                                     src_repo: tuple[Repo, str]) -> None:
    repo, _csum = src_repo
    (repo.path / "summary").write_bytes(b"\x01garbage" * 100)
    dst = _dst(tmp_path)
    with pytest.raises(CorruptionError, match=r"summary|malformed|normal form"):
        pull(dst, f"file://{repo.path}", ["main"], retries=0)
    (repo.path / "summary").write_bytes(b"\0" * (2 * 1024 * 1024))
    with pytest.raises(AtomicEdgeError, match="cap"):
        pull(dst, f"file://{repo.path}", ["main"], retries=0, max_metadata_size=1024 * 1024)
    assert not any(dst.iter_objects())


def test_malformed_commit_is_refused(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "evil", "archive")
    csum = _put(repo, "commit", b"\x00not a commit at all\xff" * 3)
    repo.set_ref("evil", csum)
    dst = _dst(tmp_path)
    with pytest.raises(CorruptionError):
        pull(dst, f"file://{repo.path}", ["evil"], retries=0)
    assert not any(dst.iter_objects())


def test_oversized_commit_is_refused(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "evil", "archive")
    meta = _put(repo, "dirmeta", DIRMETA)
    root = _put(repo, "dirtree", ob.DirTree().encode())
    big = Commit(root, meta, {"pad": Variant("ay", b"\0" * (3 * 1024 * 1024))}).encode()
    repo.set_ref("evil", _put(repo, "commit", big))
    with pytest.raises(AtomicEdgeError, match="cap"):
        pull(_dst(tmp_path), f"file://{repo.path}", ["evil"], retries=0,
             max_metadata_size=1024 * 1024)


def _deflate_bomb(total: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (1 << 20)
    out = [c.compress(chunk) for _ in range(total >> 20)]
    return b"".join(out) + c.flush()


def test_deflate_bomb_content_object_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    h = FileHeader(0, 0, 0o100644)
    name = "ab" * 32
    evil, _c = _evil_repo(tmp_path, [("bomb", name)])
    # declares 1 KiB but inflates to 512 MiB
    _put(evil, "filez", ob.archive_header_bytes(h, 1024) + _deflate_bomb(512 << 20), name)
    before = _maxrss_mb()
    dst = _dst(tmp_path)
    with pytest.raises(CorruptionError, match=r"beyond|bomb|inflate"):
        pull(dst, f"file://{evil.path}", ["evil"], retries=0)
    assert _maxrss_mb() - before < 100
    assert not dst.has_object(name, ObjectType.FILE)


def test_content_object_declaring_a_huge_size_is_refused(tmp_path: Path) -> None:
    h = FileHeader(0, 0, 0o100644)
    name = "cd" * 32
    evil, _c = _evil_repo(tmp_path, [("huge", name)])
    _put(evil, "filez", ob.archive_header_bytes(h, 1 << 40) + _deflate_bomb(1 << 20), name)
    with pytest.raises(CorruptionError, match="declares"):
        pull(_dst(tmp_path), f"file://{evil.path}", ["evil"], retries=0,
             max_file_size=1 << 30)


def _xz_bomb(total: int) -> bytes:
    c = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=1)
    chunk = b"\0" * (1 << 20)
    out = [c.compress(chunk) for _ in range(total >> 20)]
    return b"".join(out) + c.flush()


def test_malformed_superblock_and_xz_bomb_part_are_refused(tmp_path: Path,
                                                           src_repo: tuple[Repo, str]) -> None:
    repo, csum = src_repo
    rel = repo.path / df.delta_relpath(None, csum)
    rel.mkdir(parents=True)
    (rel / "superblock").write_bytes(b"\x07" * 500)
    pubsum.update(repo)
    dst = _dst(tmp_path)
    with pytest.raises(CorruptionError):
        pull(dst, f"file://{repo.path}", ["main"], require_static_deltas=True, retries=0)
    part = b"x" + _xz_bomb(768 << 20)
    header = df.PartHeader(0, hashlib.sha256(part).hexdigest(), len(part), 1000,
                           [(ObjectType.DIR_META, ob.DirMeta(0, 0, 0o40755).encode().hex()[:64]
                             .ljust(64, "0"))])
    sb = df.Superblock({}, 0, None, csum,
                       repo.read_metadata_bytes(csum, ObjectType.COMMIT), [header])
    (rel / "superblock").write_bytes(df.encode_superblock(sb))
    (rel / "0").write_bytes(part)
    pubsum.update(repo)
    before = _maxrss_mb()
    with pytest.raises(CorruptionError, match=r"bomb|cap"):
        pull(_dst(tmp_path / "2"), f"file://{repo.path}", ["main"],
             require_static_deltas=True, retries=0)
    assert _maxrss_mb() - before < 150


def test_cli_reports_a_hostile_summary_in_one_line(tmp_path: Path, src_repo: tuple[Repo, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    repo, _csum = src_repo
    (repo.path / "summary").write_bytes(b"\xff" * 64)
    dst = _dst(tmp_path)
    rc = main(["repo", "pull", "--repo", str(dst.path), f"file://{repo.path}", "main"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "Traceback" not in err
