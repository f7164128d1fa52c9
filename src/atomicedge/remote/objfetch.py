"""Object downloads of a pull: pipelined fetches, verification, staging into a transaction.

Every object is verified before it is staged: metadata by re-hashing its bytes and decoding
it (so a dirtree with ``..`` or ``/`` names never lands), content by inflating the
``.filez`` with a size cap and re-hashing the canonical stream. The bulk of the objects
goes through the pipelined fast path; whatever that misses or gets wrong is fetched again
on the careful path (retries, backoff, redirects).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from atomicedge.errors import CorruptionError, FormatError
from atomicedge.ostree import objects as ob
from atomicedge.ostree.content import InflateError, fast_zlib
from atomicedge.ostree.objects import FileHeader, ObjectType, decode_metadata_object
from atomicedge.ostree.transaction import Transaction
from atomicedge.remote.context import ObjRef, PullContext
from atomicedge.remote.http import FetchStats

log = logging.getLogger(__name__)

Verified = tuple[FileHeader, bytes | None] | None


def objpath(csum: str, ext: str) -> str:
    return f"objects/{csum[:2]}/{csum[2:]}.{ext}"


def fetch_threaded(ctx: PullContext, tx: Transaction, batch: list[ObjRef]) -> None:
    """Fetch and stage ``batch`` on the context's pipelined connections (threads)."""
    n = ctx.pipelines
    abort = threading.Event()
    futures = [ctx.pool.submit(fetch_slice, ctx, tx, batch[k::n], abort)
               for k in range(min(n, len(batch)))]
    errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def fetch_chunk(ctx: PullContext, tx: Transaction, objs: list[ObjRef]) -> None:
    """A forked worker's task: one chunk of a content batch (see :mod:`workers`)."""
    fetch_slice(ctx, tx, objs, threading.Event())


def fetch_slice(ctx: PullContext, tx: Transaction, objs: list[ObjRef],
                abort: threading.Event) -> None:
    """One connection's share: pipelined, with the careful path for what that misses."""
    try:
        paths = [objpath(c, t.ext if t != ObjectType.FILE else "filez") for c, t in objs]
        caps = [ctx.cap(o) for o in objs]
        source = ctx.content if objs and objs[0][1] == ObjectType.FILE else ctx.fetcher
        for i, data in source.fetch_many(paths, caps):
            if abort.is_set():
                return
            if data is None or not _store(ctx, tx, objs[i], data):
                _fetch_one(ctx, tx, objs[i])
            ctx.count(done=1)
            ctx.tick()
    except BaseException:
        abort.set()
        raise


def _verify(ctx: PullContext, obj: ObjRef, data: bytes) -> Verified:
    """Raise CorruptionError unless ``data`` is object ``obj``; a file's header and
    (for repos that store it inflated) its content."""
    csum, objtype = obj
    if objtype == ObjectType.FILE:
        return verify_filez(data, csum, ctx.opts.max_file_size, not ctx.repo.is_archive)
    check_meta(data, csum, objtype)
    return None


def _store(ctx: PullContext, tx: Transaction, obj: ObjRef, data: bytes) -> bool:
    """Verify ``data`` as object ``obj`` and stage it; False (nothing stored) if bad."""
    try:
        verified = _verify(ctx, obj, data)
    except CorruptionError as exc:
        log.info("refetching %s.%s: %s", obj[0], obj[1].ext, exc.message)
        ctx.fetcher.absorb(FetchStats(retries=1))
        return False
    _stage(ctx, tx, obj, data, verified)
    return True


def _stage(ctx: PullContext, tx: Transaction, obj: ObjRef, data: bytes,
           verified: Verified) -> None:
    csum, objtype = obj
    if verified is None:
        tx.write_metadata(objtype, data, expected=csum, known_missing=True)
        if objtype == ObjectType.DIR_TREE and ctx.dirtrees is not None:
            ctx.dirtrees[csum] = data
        ctx.count(metadata=1)
        return
    header, content = verified
    if content is not None:
        tx.write_content_trusted(csum, header, content, known_missing=True)
    else:
        tx.write_filez_verbatim(csum, data, known_missing=True)
    ctx.count(content=1)


def _fetch_one(ctx: PullContext, tx: Transaction, obj: ObjRef) -> None:
    """The careful path: urllib3 with retries, backoff, redirects and validation."""
    csum, objtype = obj
    ext = objtype.ext if objtype != ObjectType.FILE else "filez"
    holder: list[Verified] = []

    def check(data: bytes) -> None:
        holder[:] = [_verify(ctx, obj, data)]

    source = ctx.content if objtype == ObjectType.FILE else ctx.fetcher
    data = source.fetch(objpath(csum, ext), max_size=ctx.cap(obj), validate=check)
    assert data is not None
    _stage(ctx, tx, obj, data, holder[0])


def check_meta(data: bytes, csum: str, objtype: ObjectType) -> None:
    """Raise CorruptionError unless ``data`` is a well-formed object named ``csum``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != csum:
        raise CorruptionError(f"{objtype.ext} object {csum} has checksum {actual}")
    decode_metadata_object(objtype, data)


def verify_filez(data: bytes, csum: str, max_size: int,
                 keep: bool) -> tuple[FileHeader, bytes | None]:
    """Check a ``.filez`` against ``csum``, inflating in bounded chunks.

    Returns the header and (if ``keep``) the content. A declared size over ``max_size`` or a
    stream that inflates to more or less than declared is refused before it costs memory.
    """
    try:
        h, size, off = ob.parse_archive_header(data)
    except FormatError as exc:
        raise CorruptionError(f"content object {csum}: {exc.message}") from None
    if size > max_size:
        raise CorruptionError(f"content object {csum} declares {size} bytes, over the "
                              f"{max_size}-byte cap", "refusing a possible decompression bomb")
    m = hashlib.sha256(ob.stream_prefix(h))
    if h.is_symlink:
        if len(data) != off:
            raise CorruptionError(f"symlink object {csum} carries a payload")
        content: bytes | None = b""
    else:
        content = _inflate_hash(data, off, size, m, keep, csum)
    actual = m.hexdigest()
    if actual != csum:
        raise CorruptionError(f"content object {csum} has checksum {actual}")
    return h, content


def _inflate_hash(data: bytes, off: int, size: int, m: Any, keep: bool,
                  csum: str) -> bytes | None:
    d = fast_zlib.decompressobj(-15)
    parts: list[bytes] = []
    total = 0
    buf: bytes = memoryview(data)[off:].tobytes()
    try:
        while True:
            chunk = d.decompress(buf, 1 << 20)
            total += len(chunk)
            if total > size:
                raise CorruptionError(f"content object {csum} inflates beyond its "
                                      f"declared {size} bytes", "refusing a decompression bomb")
            m.update(chunk)
            if keep:
                parts.append(chunk)
            buf = d.unconsumed_tail
            if not buf or d.eof:
                break
        if not d.eof:
            tail = d.flush()
            total += len(tail)
            m.update(tail)
            if keep:
                parts.append(tail)
    except InflateError as exc:
        raise CorruptionError(f"content object {csum} does not inflate: {exc}") from None
    if total != size or not d.eof or d.unused_data:
        raise CorruptionError(f"content object {csum} inflates to {total} bytes, "
                              f"header says {size}")
    return b"".join(parts) if keep else None
