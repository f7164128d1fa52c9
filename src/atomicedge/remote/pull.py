"""Pull commits from a remote repository (``http(s)://`` or ``file://``) into a local one.

Safety rules, in the order a pull applies them:

1. every object is verified before it is stored: metadata by re-hashing its bytes and
   decoding it (so a dirtree with ``..`` or ``/`` names never lands), content by inflating
   the ``.filez`` with a size cap and re-hashing the canonical stream (:mod:`objfetch`);
2. with verification required, the commit's signatures are checked before the commit, and
   therefore before any object of its tree, is written;
3. ``state/COMMIT.commitpartial`` exists from before the commit object lands until its whole
   tree is present, so a crash never leaves a commit that looks complete but is not;
4. objects are committed in batches; an interrupted pull keeps every finished batch and the
   next pull skips what it has (``resume`` costs one ``stat`` per object, no download).

Static deltas are tried first when the remote advertises one (see :mod:`delta_pull`).
The modules of a pull import only downward: pull -> delta_pull -> trees -> workers,
objfetch -> context (the :class:`PullContext` they share).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from atomicedge.errors import CorruptionError, FormatError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.ostree import objects as ob
from atomicedge.ostree import summary as sm
from atomicedge.ostree.keyfile import KeyFile
from atomicedge.ostree.objects import Commit, ObjectType
from atomicedge.ostree.repo import Repo, validate_ref
from atomicedge.remote import config as rem
from atomicedge.remote import delta_pull
from atomicedge.remote.context import Progress, PullContext, PullOptions, PullStats
from atomicedge.remote.http import Fresh
from atomicedge.remote.objfetch import check_meta, objpath
from atomicedge.remote.summary_cache import SummaryCache
from atomicedge.remote.trees import TreePuller
from atomicedge.trust import sign

log = logging.getLogger(__name__)

__all__ = ["PullOptions", "PullResult", "PullStats", "RichPullProgress", "parse_refspec",
           "pull"]


@dataclass
class PullResult:
    refs: dict[str, str]
    stats: PullStats


def parse_refspec(spec: str) -> tuple[str, str | None]:
    ref, sep, csum = spec.partition("@")
    validate_ref(ref)
    return ref, ob.validate_checksum(csum) if sep else None


def pull(repo: Repo, remote_or_url: str, refs: Iterable[str] = (), *,
         progress: Progress | None = None, **kwargs: Any) -> PullResult:
    """Pull ``refs`` (``REF`` or ``REF@CHECKSUM``) from a remote name or a URL.

    Refs land in ``refs/remotes/REMOTE/REF`` for a named remote, in ``refs/heads/REF`` for a
    bare URL or with ``mirror=True``. Keyword arguments are :class:`PullOptions` fields.
    """
    opts = PullOptions(**kwargs)
    remote = rem.resolve(repo, remote_or_url)
    puller = Puller(PullContext(repo, remote, opts, progress))
    try:
        return puller.run([parse_refspec(r) for r in refs])
    finally:
        puller.close()


class Puller:
    """The top of a pull: the remote's config and summary, the refs, each ref's commits."""

    def __init__(self, ctx: PullContext) -> None:
        self.ctx = ctx
        self.trees = TreePuller(ctx)
        self.summary_bytes: bytes | None = None
        self.summary_sig: bytes | None = None

    def close(self) -> None:
        self.trees.close()
        self.ctx.close()

    # -- top level ---------------------------------------------------------------------

    def run(self, specs: list[tuple[str, str | None]]) -> PullResult:
        ctx = self.ctx
        self._check_remote_config()
        all_refs = not specs
        need_summary = all_refs or any(c is None for _r, c in specs)
        if need_summary or self.policy_summary_required:
            self._load_summary(required=not specs)
        if not specs:
            if ctx.summary is None:
                raise UsageError("no refs given and the remote has no summary",
                                 "name the refs to pull")
            specs = [(r.name, None) for r in ctx.summary.refs]
        targets = {ref: csum or self._resolve_ref(ref) for ref, csum in specs}
        for ref, csum in targets.items():
            self._pull_commit(ref, csum)
        ctx.stats.phase = "refs"
        with ctx.repo.transaction() as tx:
            for ref, csum in targets.items():
                tx.set_ref(ctx.local_ref(ref), csum)
        if ctx.opts.mirror and self.summary_bytes is not None and all_refs:
            self._mirror_summary()
        ctx.stats.phase = "done"
        ctx.tick(force=True)
        return PullResult(targets, ctx.stats)

    @property
    def policy_summary_required(self) -> bool:
        return self.ctx.remote.gpg_verify_summary or self.ctx.remote.sign_verify_summary

    def _check_remote_config(self) -> None:
        data = self.ctx.fetcher.fetch("config", max_size=1024 * 1024, optional=True,
                                      validate=_parse_config)
        if data is None:
            return
        kf = _parse_config(data)
        mode = kf.get("core", "mode") or ""
        if mode not in ("archive", "archive-z2"):
            raise FormatError(f"remote repository mode is {mode!r}, not archive",
                              "serve an archive-mode repository over HTTP")

    def _load_summary(self, *, required: bool) -> None:
        ctx = self.ctx
        ctx.stats.phase = "summary"
        cache = SummaryCache(ctx.repo.path, ctx.remote.name) if ctx.remote.name else None
        sig, data, fresh = self._fetch_summary(cache)
        if data is None:
            if required or self.policy_summary_required:
                raise NotFoundError(f"{ctx.remote.url} has no summary",
                                    "run `atomicedge repo summary -u` on the server")
            return
        if self.policy_summary_required:
            try:
                self._verify_summary(data, sig)
            except CorruptionError:
                if cache is None or len(fresh) == 2:
                    raise
                # some of it came from the cache: never trust that over the server
                cache.drop(sig=True)
                cache.drop(sig=False)
                sig, data, fresh = self._fetch_summary(None)
                if data is None:
                    raise NotFoundError(f"{ctx.remote.url} has no summary") from None
                self._verify_summary(data, sig)
        ctx.summary = sm.parse(data)
        self.summary_bytes, self.summary_sig = data, sig
        if cache is not None:  # only what passed every check above is kept
            for is_sig, f in fresh.items():
                if f.data is not None:
                    cache.store(sig=is_sig, data=f.data, validators=f.validators)

    def _verify_summary(self, data: bytes, sig: bytes | None) -> None:
        ctx = self.ctx
        meta = ob.decode_metadata_dict(sig) if sig is not None else None
        forced = ctx.opts.policy  # an explicit policy can only switch checks off here
        pol = sign.TrustPolicy(
            gpg=ctx.remote.gpg_verify_summary and (forced is None or forced.gpg),
            ed25519=ctx.remote.sign_verify_summary and (forced is None or forced.ed25519),
            gpg_keyrings=ctx.policy.gpg_keyrings,
            ed25519_keys=ctx.policy.ed25519_keys)
        sign.verify("summary", data, meta, pol)

    def _fetch_summary(self, cache: SummaryCache | None
                       ) -> tuple[bytes | None, bytes | None, dict[bool, Fresh]]:
        """``(summary.sig, summary, fresh downloads)``, reusing the cached copies.

        As libostree: a ``304`` for ``summary.sig`` means the cached summary is current and
        is not requested at all. Beyond it: an unsigned summary is revalidated by its own
        ETag. A cached copy that no longer parses is ignored.
        """
        fetcher = self.ctx.fetcher
        cached_sig = cache.load(sig=True) if cache else None
        cached = cache.load(sig=False) if cache else None
        if cached is not None:
            try:
                sm.parse(cached.data)
            except FormatError:
                cached = None
        fresh: dict[bool, Fresh] = {}
        sig_f = fetcher.fetch_fresh(
            "summary.sig", max_size=16 * 1024 * 1024, validate=ob.decode_metadata_dict,
            cached=cached_sig.validators if cached_sig and cached else None)
        sig: bytes | None = None
        if sig_f is not None:
            if sig_f.data is None and cached_sig is not None and cached is not None:
                return cached_sig.data, cached.data, fresh
            sig = sig_f.data
            fresh[True] = sig_f
        elif cache is not None:
            cache.drop(sig=True)  # the remote stopped signing: an old signature must go
        sum_f = fetcher.fetch_fresh(
            "summary", max_size=min(sm.MAX_SUMMARY, self.ctx.opts.max_metadata_size),
            validate=sm.parse, cached=cached.validators if cached and sig is None else None)
        if sum_f is None:
            return sig, None, fresh
        if sum_f.data is None and cached is not None:
            return sig, cached.data, fresh
        fresh[False] = sum_f
        return sig, sum_f.data, fresh

    def _resolve_ref(self, ref: str) -> str:
        ctx = self.ctx
        if ctx.summary is not None:
            entry = ctx.summary.lookup(ref)
            if entry is None:
                raise NotFoundError(f"remote {ctx.remote.name or ctx.remote.url} has no "
                                    f"ref {ref!r}")
            return entry.commit
        data = ctx.fetcher.fetch(f"refs/heads/{ref}", max_size=1024, optional=True,
                                 validate=_check_ref_body)
        if data is None:
            raise NotFoundError(f"remote {ctx.remote.url} has no ref {ref!r}")
        text = data.decode("ascii", "replace").strip()
        if not ob.CHECKSUM_RE.match(text):
            raise FormatError(f"remote ref {ref} holds {text[:40]!r}, not a checksum",
                              "the server answered with something else (an HTML page?)")
        return text

    def _mirror_summary(self) -> None:
        assert self.summary_bytes is not None
        atomic_write(self.ctx.repo.path / "summary", self.summary_bytes)
        if self.summary_sig is not None:
            atomic_write(self.ctx.repo.path / "summary.sig", self.summary_sig)

    # -- one commit --------------------------------------------------------------------

    def _pull_commit(self, ref: str, csum: str) -> None:
        repo, opts = self.ctx.repo, self.ctx.opts
        if (repo.has_object(csum, ObjectType.COMMIT) and not repo.is_partial(csum)
                and not opts.commit_metadata_only and opts.depth == 0):
            log.info("%s is already complete", csum)
            return
        if not opts.commit_metadata_only and not opts.disable_static_deltas:
            if delta_pull.try_delta(self.trees, ref, csum):
                return
        elif opts.require_static_deltas:
            raise UsageError("--require-static-deltas conflicts with the other options")
        chain = self._fetch_commits(ref, csum)
        if opts.commit_metadata_only:
            return
        for c in chain:
            self.trees.pull_tree(c)

    def _fetch_commits(self, ref: str, csum: str) -> list[str]:
        """Fetch, verify and store the commit (and ``depth`` parents); all marked partial."""
        self.ctx.stats.phase = "commits"
        depth = self.ctx.opts.depth
        out = []
        cur: str | None = csum
        level = 0
        while cur is not None:
            try:
                commit = self._fetch_commit(cur, ref if level == 0 else None)
            except NotFoundError:
                if level == 0:
                    raise
                break  # a shallow remote: history stops here
            out.append(cur)
            if depth >= 0 and level >= depth:
                break
            cur = commit.parent
            level += 1
        return out

    def _fetch_commit(self, csum: str, ref: str | None) -> Commit:
        ctx = self.ctx
        if ctx.repo.has_object(csum, ObjectType.COMMIT):
            commit = ctx.repo.load_commit(csum)
            self.trees.note_sizes(commit)
            return commit
        max_size = ctx.opts.max_metadata_size
        meta_bytes = ctx.fetcher.fetch(objpath(csum, "commitmeta"), max_size=max_size,
                                       optional=True, validate=ob.decode_metadata_dict)
        data = ctx.fetcher.fetch(objpath(csum, "commit"), max_size=max_size,
                                 validate=lambda d: check_meta(d, csum, ObjectType.COMMIT))
        assert data is not None
        meta = ob.decode_metadata_dict(meta_bytes) if meta_bytes is not None else None
        return self.trees.store_commit(csum, data, meta, ref)


def _check_ref_body(data: bytes) -> None:
    if not ob.CHECKSUM_RE.match(data.decode("ascii", "replace").strip()):
        raise FormatError(f"remote ref holds {data[:40]!r}, not a checksum",
                          "the server answered with something else (an HTML page?)")


def _parse_config(data: bytes) -> KeyFile:
    try:
        return KeyFile.parse(data.decode("utf-8"), source="remote config")
    except UnicodeDecodeError:
        raise FormatError("the remote's config is not UTF-8 text",
                          "is the URL really an OSTree repository?") from None


class RichPullProgress:
    """A rich progress bar (objects, bytes, rate) fed by :class:`PullStats` callbacks."""

    def __init__(self, console: Any = None, description: str = "pull") -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("objects {task.fields[bytes]} {task.fields[rate]} {task.fields[phase]}"),
            TimeElapsedColumn(), console=console, transient=False)
        self._task = self._progress.add_task(description, total=None, bytes="0 B",
                                             rate="", phase="")

    def __enter__(self) -> RichPullProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, st: PullStats) -> None:
        rate = st.bytes / st.seconds if st.seconds > 0 else 0.0
        self._progress.update(self._task, completed=st.objects_done,
                              total=max(st.objects_total, st.objects_done) or None,
                              bytes=_human(st.bytes), rate=f"{_human(int(rate))}/s",
                              phase=st.phase)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
