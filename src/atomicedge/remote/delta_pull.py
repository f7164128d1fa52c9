"""Static deltas on the pull side: choose a delta, fetch it, apply it, fetch what it lacks.

Choice (libostree's rules, minus its bug #2680): candidates come from the TO commit's
delta index, else the summary's ``ostree.static-deltas``; prefer ``FROM-TO`` where FROM is a
complete local commit (the ref's current commit first), use a from-scratch delta only when
no FROM fits. The superblock must hash to the advertised digest, its commit to TO; the
commit's signature is checked (by :meth:`TreePuller.store_commit`) before any part is applied.
Parts whose objects are all present are skipped; afterwards the normal tree walk fetches
only objects still missing (normally none), so the wire carries the delta and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from atomicedge.delta import format as df
from atomicedge.delta.apply import decode_part, run_part
from atomicedge.errors import CorruptionError, NotFoundError
from atomicedge.ostree import forkpool
from atomicedge.ostree import objects as ob
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.transaction import Transaction
from atomicedge.remote.context import PullContext
from atomicedge.remote.trees import TreePuller

log = logging.getLogger(__name__)


def _advertised(ctx: PullContext, to_csum: str) -> dict[str, str] | None:
    """Delta name -> superblock digest for deltas to ``to_csum``; None if unknown."""
    index = ctx.fetcher.fetch(df.index_relpath(to_csum), max_size=16 * 1024 * 1024,
                              optional=True, validate=ob.decode_metadata_dict)
    if index is not None:
        meta = ob.decode_metadata_dict(index)
        v = meta.get("ostree.static-deltas")
        if v is None or v.type != "a{sv}":
            return {}
        return {n: bytes(d.value).hex() for n, d in v.value.items()
                if d.type == "ay" and len(d.value) == 32}
    if ctx.summary is not None:
        return {n: d for n, d in ctx.summary.deltas.items() if n.endswith(to_csum)}
    return None


def _complete(ctx: PullContext, csum: str) -> bool:
    repo = ctx.repo
    return repo.has_object(csum, ObjectType.COMMIT) and not repo.is_partial(csum)


def choose(ctx: PullContext, ref: str, to_csum: str,
           advertised: dict[str, str] | None) -> tuple[str | None, str | None]:
    """(from or None for scratch, expected digest or None) — or raise NotFoundError."""
    local = ctx.repo.read_ref(ctx.local_ref(ref))
    if advertised is None:  # no index, no summary: speculate like ostree
        if local and _complete(ctx, local):
            return local, None
        if local is None:
            return None, None
        raise NotFoundError("no delta information")
    froms = {}
    for name, digest in advertised.items():
        frm, to = df.parse_delta_name(name)
        if to == to_csum:
            froms[frm] = digest
    if local in froms and local is not None and _complete(ctx, local):
        return local, froms[local]
    for frm, digest in froms.items():
        if frm is not None and _complete(ctx, frm):
            return frm, digest
    if None in froms and local is None:
        return None, froms[None]
    raise NotFoundError(f"no usable static delta to {to_csum}")


def try_delta(trees: TreePuller, ref: str, to_csum: str) -> bool:
    """Pull ``to_csum`` through a static delta if one fits; False to fall back to objects."""
    ctx = trees.ctx
    try:
        frm, digest = choose(ctx, ref, to_csum, _advertised(ctx, to_csum))
        relpath = df.delta_relpath(frm, to_csum)
        def check(d: bytes) -> None:
            if digest is not None and hashlib.sha256(d).hexdigest() != digest:
                raise CorruptionError(f"static delta superblock for {to_csum} does not "
                                      "match the digest the server advertises")
            df.parse_superblock(df.unwrap_signed(d)[0])

        data = ctx.fetcher.fetch(f"{relpath}/superblock", max_size=df.MAX_SUPERBLOCK,
                                 optional=True, validate=check)
        if data is None:
            raise NotFoundError(f"no static delta {df.delta_name(frm, to_csum)}")
    except NotFoundError as exc:
        if ctx.opts.require_static_deltas:
            raise NotFoundError(f"{exc.message} (--require-static-deltas)") from None
        log.info("object pull for %s: %s", to_csum, exc.message)
        return False
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise CorruptionError(f"static delta superblock for {to_csum} does not match the "
                              "digest the server advertises")
    inner, sigs = df.unwrap_signed(data)
    if sigs is not None and ctx.policy.ed25519:  # signed, and we have trusted keys
        try:
            df.verify_superblock(data, ctx.policy.ed25519_keys,
                                 f"static delta {df.delta_name(frm, to_csum)}")
        except CorruptionError as exc:
            if ctx.opts.require_static_deltas:
                raise
            log.warning("not using the static delta: %s; pulling objects", exc.message)
            return False
    sb = df.parse_superblock(inner)
    if sb.to_csum != to_csum or sb.from_csum != frm:
        raise CorruptionError("static delta superblock names other commits than its path")
    _apply(trees, ref, sb, relpath)
    ctx.stats.deltas.append(df.delta_name(frm, to_csum))
    return True


def _apply(trees: TreePuller, ref: str, sb: df.Superblock, relpath: str) -> None:
    ctx = trees.ctx
    if hashlib.sha256(sb.commit).hexdigest() != sb.to_csum:
        raise CorruptionError("static delta carries a commit that does not match TO")
    meta: dict[str, Any] | None = sb.detached_meta(relpath)
    if meta is None:
        raw = ctx.fetcher.fetch(f"objects/{sb.to_csum[:2]}/{sb.to_csum[2:]}.commitmeta",
                                max_size=ctx.opts.max_metadata_size, optional=True,
                                validate=ob.decode_metadata_dict)
        meta = ob.decode_metadata_dict(raw) if raw is not None else None
    ctx.stats.phase = "delta"
    trees.store_commit(sb.to_csum, sb.commit, meta, ref)
    fallbacks = [(f.checksum, f.objtype) for f in sb.fallbacks]
    ctx.stats.objects_total += sum(len(p.objects) for p in sb.parts)
    if fallbacks:  # fetch_objects counts these
        trees.fetch_objects(fallbacks)
    todo = [(i, h) for i, h in enumerate(sb.parts)
            if not all(ctx.repo.has_object(c, t) for t, c in h.objects)]
    ctx.count(done=sum(len(h.objects) for h in sb.parts) - sum(
        len(h.objects) for _i, h in todo))

    if len(todo) > 1 and forkpool.workers() > 1:
        # parts are independent (their only sources are objects of FROM, already here),
        # so forked workers take them in any order, one transaction per part
        trees.workers.stage(
            [[(_run_part, (sb.inline_part(relpath, i), relpath, i, h))] for i, h in todo],
            lambda g: _part_done(ctx, todo[g][1]))
    else:
        with ThreadPoolExecutor(max_workers=2) as pool:  # download/inflate the next part
            for (_i, header), payload in zip(todo, pool.map(
                    lambda item: fetch_decode(ctx, sb.inline_part(relpath, item[0]),
                                           relpath, *item), todo), strict=True):
                with ctx.repo.transaction() as tx:
                    run_part(ctx.repo, tx, payload, header)
                _part_done(ctx, header)
    trees.pull_tree(sb.to_csum)


def fetch_decode(ctx: PullContext, inline: bytes | None, relpath: str, i: int,
                 header: df.PartHeader) -> df.PartPayload:
    """Part ``i`` (``inline`` if the superblock carries it), checked and inflated."""
    part = inline
    if part is None:
        def check(d: bytes) -> None:
            if hashlib.sha256(d).hexdigest() != header.checksum:
                raise CorruptionError("static delta part has the wrong checksum")
        part = ctx.content.fetch(f"{relpath}/{i}", max_size=header.size, validate=check)
        assert part is not None
    return decode_part(part, header, check_digest=False)


def _part_done(ctx: PullContext, header: df.PartHeader) -> None:
    ctx.stats.delta_parts += 1
    ctx.count(done=len(header.objects))
    ctx.tick()


def _run_part(ctx: PullContext, tx: Transaction, inline: bytes | None, relpath: str, i: int,
              header: df.PartHeader) -> None:
    """A forked worker's task: download, inflate and execute one part."""
    run_part(ctx.repo, tx, fetch_decode(ctx, inline, relpath, i, header), header)
