"""Static deltas in ostree's exact format: generate, show, delete, apply-offline.

Generation: the objects reachable from TO but not from FROM go into xz-compressed parts.
A modified file (same path in FROM, or same directory and name stem, e.g. a library whose
version suffix changed) is sent as a bsdiff against the FROM object when that is clearly
smaller than the file itself; metadata and other files are spliced from the blob. Large new
files can be left as "fallback" ``.filez`` objects (``--min-fallback-size``), as ostree does.
The real ``ostree static-delta show``/``apply-offline`` and ``ostree pull`` read the result.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge.delta import format as df
from atomicedge.delta.apply import decode_part, run_part
from atomicedge.delta.bsdiff import bsdiff
from atomicedge.errors import FormatError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.ostree import objects as ob
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import FileHeader, ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from atomicedge.trust import sign

MAX_BSDIFF = 128 * 1024 * 1024


@dataclass
class GenResult:
    name: str
    parts: int
    total_size: int
    fallbacks: int
    bsdiff: int
    path: Path


@dataclass
class _Part:
    modes: dict[tuple[int, int, int], int] = field(default_factory=dict)
    xattrs: dict[ob.Xattrs, int] = field(default_factory=lambda: {(): 0})
    blob: bytearray = field(default_factory=bytearray)
    ops: bytearray = field(default_factory=bytearray)
    objects: list[tuple[ObjectType, str]] = field(default_factory=list)
    usize: int = 0

    def mode_idx(self, h: FileHeader) -> int:
        return self.modes.setdefault((h.uid, h.gid, h.mode), len(self.modes))

    def xattr_idx(self, h: FileHeader) -> int:
        return self.xattrs.setdefault(h.xattrs, len(self.xattrs))

    def put(self, data: bytes) -> int:
        off = len(self.blob)
        self.blob += data
        return off

    def op(self, code: str, *args: int) -> None:
        self.ops += code.encode()
        for a in args:
            self.ops += ob.encode_varint(a)

    def payload(self) -> df.PartPayload:
        return df.PartPayload(list(self.modes), list(self.xattrs), bytes(self.blob),
                              bytes(self.ops))


def _file_paths(repo: Repo, tree: str, prefix: str = "") -> Iterator[tuple[str, str]]:
    t = repo.load_dirtree(tree)
    for name, csum in t.files:
        yield f"{prefix}/{name}", csum
    for name, sub, _meta in t.dirs:
        yield from _file_paths(repo, sub, f"{prefix}/{name}")


def _stem_key(path: str) -> tuple[str, str]:
    d, _, base = path.rpartition("/")
    return d, base.split(".", 1)[0]


def _pick_sources(repo: Repo, frm: str | None, to: str,
                  new_files: set[str]) -> dict[str, str]:
    """New content csum -> FROM content csum to diff against (same path, else same stem)."""
    if frm is None:
        return {}
    old_by_path: dict[str, str] = {}
    old_by_stem: dict[tuple[str, str], str] = {}
    for path, csum in _file_paths(repo, repo.load_commit(frm).root_tree):
        old_by_path[path] = csum
        old_by_stem.setdefault(_stem_key(path), csum)
    out: dict[str, str] = {}
    for path, csum in _file_paths(repo, repo.load_commit(to).root_tree):
        if csum not in new_files or csum in out:
            continue
        src = old_by_path.get(path) or old_by_stem.get(_stem_key(path))
        if src is not None and src != csum:
            out[csum] = src
    return out


def _try_bsdiff(repo: Repo, new: tuple[FileHeader, bytes], src_csum: str) -> bytes | None:
    """A bsdiff stream if it is clearly cheaper than sending the file, else None."""
    h, data = new
    if h.is_symlink or not data or len(data) > MAX_BSDIFF:
        return None
    sh, old = repo.load_content(src_csum)
    if sh.is_symlink or not old or len(old) + len(data) > MAX_BSDIFF:
        return None
    if not 0.5 <= len(data) / len(old) <= 2.0:
        return None
    patch = bsdiff(old, data)
    # the diff bytes are mostly zeros and compress away; count what will not
    cost = len(patch) - patch.count(0)
    return patch if cost < 0.6 * len(data) else None


@dataclass
class _Plan:
    meta: list[tuple[ObjectType, str]]
    files: list[str]
    fallbacks: list[str]
    sources: dict[str, str]


def _plan(repo: Repo, frm: str | None, to: str, min_fallback: int, use_bsdiff: bool) -> _Plan:
    new = reachable(repo, to) - (reachable(repo, frm) if frm else set())
    new.discard((to, ObjectType.COMMIT))
    meta = sorted((t, c) for c, t in new if t.is_meta)
    files = sorted(c for c, t in new if t == ObjectType.FILE)
    sources = _pick_sources(repo, frm, to, set(files)) if use_bsdiff else {}
    fallbacks: list[str] = []
    if min_fallback > 0 and repo.is_archive:
        for c in files:
            if c in sources:
                continue
            path = repo.object_path(c, ObjectType.FILE)
            if path.stat().st_size > min_fallback:
                fallbacks.append(c)
    fb = set(fallbacks)
    return _Plan(meta, [c for c in files if c not in fb], fallbacks, sources)


def _add_content(part: _Part, csum: str, h: FileHeader, data: bytes,
                 patch: bytes | None, src: str | None) -> None:
    part.objects.append((ObjectType.FILE, csum))
    m, x = part.mode_idx(h), part.xattr_idx(h)
    if patch is not None and src is not None:
        part.op("r", part.put(ob.raw(src)))
        part.op("o", m, x, len(data))
        part.op("B", part.put(patch), len(patch))
        part.op("c")
        part.op("R")
        part.usize += len(data)
        return
    payload = os.fsencode(h.symlink_target) if h.is_symlink else data
    part.op("S", m, x, len(payload), part.put(payload))
    part.usize += len(payload)


def _build_parts(repo: Repo, plan: _Plan, max_chunk: int) -> tuple[list[_Part], int]:
    parts = [_Part()]
    for objtype, csum in plan.meta:
        data = repo.read_metadata_bytes(csum, objtype)
        p = parts[-1]
        p.objects.append((objtype, csum))
        p.op("S", len(data), p.put(data))
        p.usize += len(data)

    def diff_one(csum: str) -> tuple[str, tuple[FileHeader, bytes], bytes | None]:
        hd = repo.load_content(csum)
        src = plan.sources.get(csum)
        return csum, hd, _try_bsdiff(repo, hd, src) if src else None

    # order as ostree: bsdiff'd objects, then plain files, then symlinks
    nbs = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(diff_one, plan.files))
    results.sort(key=lambda r: (r[2] is None, r[1][0].is_symlink, r[0]))
    for csum, (h, data), patch in results:
        if len(parts[-1].blob) > max_chunk:
            parts.append(_Part())
        _add_content(parts[-1], csum, h, data, patch, plan.sources.get(csum))
        nbs += patch is not None
    return [p for p in parts if p.objects], nbs


def generate(repo: Repo, frm: str | None, to: str, *, inline: bool = False,
             min_fallback_size: int = 4_000_000, max_chunk_size: int = 32_000_000,
             bsdiff: bool = True, filename: Path | None = None,
             now: int | None = None, sign_secrets: Sequence[str] = ()) -> GenResult:
    """Write the delta FROM -> TO (``frm=None``: from scratch) into ``deltas/``.

    ``sign_secrets`` (ed25519, ostree's base64 form) make it a signed superblock, which
    ``apply-offline`` and pulls from a ``sign-verify`` remote check before using it.
    """
    for secret in sign_secrets:
        sign.ed25519_signing_key(secret)  # a bad key fails before any work
    to = repo.resolve_rev(to)
    if frm is not None:
        frm = repo.resolve_rev(frm)
        if frm == to:
            raise UsageError("--from and --to are the same commit")
    if filename is not None:
        inline, min_fallback_size = True, 0
    plan = _plan(repo, frm, to, min_fallback_size, bsdiff)
    built, nbs = _build_parts(repo, plan, max_chunk_size)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        files = list(pool.map(lambda p: df.encode_part(p.payload()), built))
    relpath = df.delta_relpath(frm, to)
    meta: dict[str, Variant] = {"ostree.endianness": Variant("y", ord("l"))}
    sb = df.Superblock(meta, int(time.time()) if now is None else now, frm, to,
                       repo.read_metadata_bytes(to, ObjectType.COMMIT))
    for i, (p, data) in enumerate(zip(built, files, strict=True)):
        sb.parts.append(df.PartHeader(0, hashlib.sha256(data).hexdigest(), len(data),
                                      p.usize, p.objects))
        if inline:
            meta[f"{relpath}/{i}"] = Variant("(yay)", (data[0], data[1:]))
    detached = repo.read_detached_metadata(to)
    if detached:
        meta[f"{relpath}/commitmeta"] = Variant("a{sv}", detached)
    for c in plan.fallbacks:
        _h, content = repo.load_content(c)
        size = repo.object_path(c, ObjectType.FILE).stat().st_size
        sb.fallbacks.append(df.Fallback(ObjectType.FILE, c, size, len(content)))
    sbytes = df.encode_superblock(sb)
    if sign_secrets:
        sigs: dict[str, Any] = {}
        for secret in sign_secrets:
            sigs = sign.add_signature(sigs, sign.ED25519_KEY, sign.ed25519_sign(sbytes, secret))
        sbytes = df.wrap_signed(sbytes, sigs)
    name = df.delta_name(frm, to)
    if filename is not None:
        atomic_write(filename, sbytes)
        return GenResult(name, len(files), len(sbytes), 0, nbs, filename)
    target = repo.path / relpath
    _publish(repo, target, sbytes, [] if inline else files)
    total = len(sbytes) + (0 if inline else sum(len(f) for f in files))
    return GenResult(name, len(files), total, len(plan.fallbacks), nbs, target)


def _publish(repo: Repo, target: Path, superblock: bytes, parts: list[bytes]) -> None:
    """Write into a temp dir, then rename it into place (readers never see half a delta)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for i, data in enumerate(parts):
        atomic_write(tmp / str(i), data, fsync=repo.fsync_enabled)
    atomic_write(tmp / "superblock", superblock, fsync=repo.fsync_enabled)
    if target.exists():
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def _delta_dir(repo: Repo, name: str) -> Path:
    frm, to = df.parse_delta_name(name)
    d = repo.path / df.delta_relpath(frm, to)
    if not (d / "superblock").is_file():
        raise NotFoundError(f"no static delta {name}",
                            f"list them with: atomicedge repo static-delta list --repo "
                            f"{repo.path}")
    return d


def delete(repo: Repo, name: str) -> None:
    d = _delta_dir(repo, name)
    with repo.lock(exclusive=True):
        shutil.rmtree(d)


def load_superblock(path: Path) -> tuple[df.Superblock, dict[str, Any] | None]:
    inner, sigs = df.unwrap_signed(path.read_bytes())
    return df.parse_superblock(inner), sigs


def verify(repo: Repo, name: str, keys: Sequence[str]) -> None:
    """``static-delta verify``: the published delta's superblock signature."""
    path = _delta_dir(repo, name) / "superblock"
    df.verify_superblock(path.read_bytes(), keys, f"static delta {name}")


def show(repo: Repo, name: str) -> str:
    sb, _sigs = load_superblock(_delta_dir(repo, name) / "superblock")
    lines = [f"Delta: {name}", f"From: {sb.from_csum or '<empty>'}", f"To: {sb.to_csum}",
             f"Endianness: {'big' if sb.big_endian else 'little'}",
             f"Timestamp: {sb.timestamp}", f"Number of parts: {len(sb.parts)}",
             f"Number of fallback entries: {len(sb.fallbacks)}"]
    total = sum(p.size for p in sb.parts)
    utotal = sum(p.usize for p in sb.parts)
    lines.append(f"Total Part Size: {total}")
    lines.append(f"Total Uncompressed Part Size: {utotal}")
    for i, p in enumerate(sb.parts):
        lines.append(f"PartMeta{i}: nobjects={len(p.objects)} size={p.size} usize={p.usize}")
    return "\n".join(lines) + "\n"


def apply_offline(repo: Repo, superblock_path: Path, keys: Sequence[str] = ()) -> str:
    """Apply a delta whose superblock (and numbered parts beside it) are local files.

    With trusted ``keys`` given, or ``core.sign-verify-deltas=true`` in the repo config
    (then keys are required), the superblock's signature is checked before anything is
    written: a USB stick is as untrusted as a network.
    """
    if superblock_path.is_dir():
        superblock_path = superblock_path / "superblock"
    if not superblock_path.is_file():
        raise NotFoundError(f"{superblock_path} does not exist")
    if keys or repo.config.get_bool("core", "sign-verify-deltas", False):
        if not keys:
            raise UsageError("core.sign-verify-deltas is set but no trusted key was given",
                             "pass the public key(s) or --keys-file")
        df.verify_superblock(superblock_path.read_bytes(), keys, str(superblock_path))
    sb, _sigs = load_superblock(superblock_path)
    if sb.fallbacks:
        raise FormatError("this delta has HTTP fallback objects; it cannot be applied "
                          "offline", "regenerate it with --min-fallback-size=0")
    if sb.from_csum and (not repo.has_object(sb.from_csum, ObjectType.COMMIT)
                         or repo.is_partial(sb.from_csum)):
        raise NotFoundError(f"the delta's FROM commit {sb.from_csum} is not complete here")
    if hashlib.sha256(sb.commit).hexdigest() != sb.to_csum:
        raise FormatError("the delta's commit does not match its TO checksum")
    ob.Commit.decode(sb.commit)
    relpath = df.delta_relpath(sb.from_csum, sb.to_csum)
    state = repo.path / "state" / f"{sb.to_csum}.commitpartial"
    state.parent.mkdir(exist_ok=True)
    state.touch()
    with repo.transaction() as tx:
        tx.write_metadata(ObjectType.COMMIT, sb.commit, expected=sb.to_csum)
    detached = sb.detached_meta(relpath)
    if detached:
        repo.write_detached_metadata(sb.to_csum, detached)
    def load(item: tuple[int, df.PartHeader]) -> df.PartPayload:
        i, header = item
        data = sb.inline_part(relpath, i)
        if data is None:
            data = (superblock_path.parent / str(i)).read_bytes()
        return decode_part(data, header)

    items = list(enumerate(sb.parts))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for (_i, header), payload in zip(items, pool.map(load, items), strict=True):
            with repo.transaction() as tx:
                run_part(repo, tx, payload, header)
    state.unlink(missing_ok=True)
    return sb.to_csum
