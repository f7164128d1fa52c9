"""Pull commits from a remote repository (``http(s)://`` or ``file://``) into a local one.

Safety rules, in the order a pull applies them:

1. every object is verified before it is stored: metadata by re-hashing its bytes and
   decoding it (so a dirtree with ``..`` or ``/`` names never lands), content by inflating
   the ``.filez`` with a size cap and re-hashing the canonical stream;
2. with verification required, the commit's signatures are checked before the commit, and
   therefore before any object of its tree, is written;
3. ``state/COMMIT.commitpartial`` exists from before the commit object lands until its whole
   tree is present, so a crash never leaves a commit that looks complete but is not;
4. objects are committed in batches; an interrupted pull keeps every finished batch and the
   next pull skips what it has (``resume`` costs one ``stat`` per object, no download).

Static deltas are tried first when the remote advertises one (see :mod:`delta_pull`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from atomicedge.errors import CorruptionError, FormatError, NotFoundError, UsageError
from atomicedge.ostree import forkpool
from atomicedge.ostree import objects as ob
from atomicedge.ostree import summary as sm
from atomicedge.ostree.content import InflateError, fast_zlib
from atomicedge.ostree.keyfile import KeyFile
from atomicedge.ostree.objects import (
    Commit,
    DirTree,
    FileHeader,
    ObjectType,
    decode_metadata_object,
)
from atomicedge.ostree.repo import Repo, validate_ref
from atomicedge.ostree.transaction import Transaction
from atomicedge.remote import config as rem
from atomicedge.remote.http import FetchStats, Fresh
from atomicedge.remote.mirrors import Source, open_source
from atomicedge.remote.summary_cache import SummaryCache
from atomicedge.remote.workers import Report, Workers
from atomicedge.trust import sign

log = logging.getLogger(__name__)

BATCH = int(os.environ.get("ATOMICEDGE_PULL_BATCH", "") or 1000)  # objects per commit
# a pull missing this many objects uses forked workers (see pull_workers)
FORK_MIN = int(os.environ.get("ATOMICEDGE_PULL_FORK_MIN", "") or 256)
FORK_CHUNK = 128  # objects per worker task: the unit of progress reports
PIPELINES = 2  # pipelined connections (32 requests in flight each); more only adds GIL churn
BULK_CHECK = 2000  # above this many candidates, list objects/ instead of stat-ing each
MAX_METADATA = 128 * 1024 * 1024
MAX_FILE = 4 * 1024 * 1024 * 1024
ObjRef = tuple[str, ObjectType]


@dataclass
class PullStats:
    """Live counters (the progress bar reads them) and the final report."""

    metadata_fetched: int = 0
    content_fetched: int = 0
    objects_total: int = 0
    objects_done: int = 0
    bytes: int = 0
    requests: int = 0
    retries: int = 0
    deltas: list[str] = field(default_factory=list)
    delta_parts: int = 0
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


Progress = Callable[[PullStats], None]


@dataclass
class PullOptions:
    mirror: bool = False
    depth: int = 0
    commit_metadata_only: bool = False
    disable_static_deltas: bool = False
    require_static_deltas: bool = False
    max_metadata_size: int = MAX_METADATA
    max_file_size: int = MAX_FILE
    connections: int = 8
    retries: int = 5
    backoff: float = 0.1
    read_timeout: float = 30.0
    policy: sign.TrustPolicy | None = None  # overrides the remote's configuration


@dataclass
class PullResult:
    refs: dict[str, str]
    stats: PullStats


def policy_for(remote: rem.Remote) -> sign.TrustPolicy:
    keyrings = [remote.gpg_keyring] if remote.gpg_keyring else []
    return sign.TrustPolicy(gpg=remote.gpg_verify, ed25519=remote.sign_verify,
                            gpg_keyrings=keyrings, ed25519_keys=list(remote.ed25519_keys))


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
    puller = Puller(repo, remote, opts, progress)
    try:
        return puller.run([parse_refspec(r) for r in refs])
    finally:
        puller.close()


class Puller:
    def __init__(self, repo: Repo, remote: rem.Remote, opts: PullOptions,
                 progress: Progress | None) -> None:
        self.repo = repo
        self.remote = remote
        self.opts = opts
        self.policy = opts.policy or policy_for(remote)
        self.progress = progress
        self.stats = PullStats()
        kw: dict[str, Any] = dict(max_connections=opts.connections, retries=opts.retries,
                                  backoff=opts.backoff, read_timeout=opts.read_timeout)
        self.fetcher: Source = open_source(remote.url, **kw)
        # content objects and delta parts: the remote's contenturl (a CDN), if it has one
        self.content: Source = open_source(remote.contenturl, **kw) if remote.contenturl \
            else self.fetcher
        self.pool = ThreadPoolExecutor(max_workers=self._pipelines())
        self.summary: sm.Summary | None = None
        self.summary_bytes: bytes | None = None
        self.summary_sig: bytes | None = None
        self._sizes: dict[str, int] = {}
        self._last_tick = 0.0
        self._stats_lock = threading.Lock()
        self.workers = Workers(self)
        self._trees: dict[str, bytes] | None = None  # dirtrees fetched in this level

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.workers.close()
        self.fetcher.close()
        if self.content is not self.fetcher:
            self.content.close()

    def fetch_stats(self) -> FetchStats:
        """What crossed the wire, from the remote's url and its contenturl together."""
        if self.content is self.fetcher:
            return self.fetcher.stats
        return self.fetcher.stats + self.content.stats

    def _pipelines(self) -> int:
        return max(1, min(self.opts.connections, PIPELINES))

    # -- progress ----------------------------------------------------------------------

    def tick(self, force: bool = False) -> None:
        fs = self.fetch_stats()
        self.stats.bytes, self.stats.requests, self.stats.retries = (
            fs.bytes, fs.requests, fs.retries)
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_tick > 0.1):
            self._last_tick = now
            self.progress(self.stats)

    # -- top level ---------------------------------------------------------------------

    def run(self, specs: list[tuple[str, str | None]]) -> PullResult:
        self._check_remote_config()
        all_refs = not specs
        need_summary = all_refs or any(c is None for _r, c in specs)
        if need_summary or self.policy_summary_required:
            self._load_summary(required=not specs)
        if not specs:
            if self.summary is None:
                raise UsageError("no refs given and the remote has no summary",
                                 "name the refs to pull")
            specs = [(r.name, None) for r in self.summary.refs]
        targets = {ref: csum or self._resolve_ref(ref) for ref, csum in specs}
        for ref, csum in targets.items():
            self._pull_commit(ref, csum)
        self.stats.phase = "refs"
        with self.repo.transaction() as tx:
            for ref, csum in targets.items():
                tx.set_ref(self._local_ref(ref), csum)
        if self.opts.mirror and self.summary_bytes is not None and all_refs:
            self._mirror_summary()
        self.stats.phase = "done"
        self.tick(force=True)
        return PullResult(targets, self.stats)

    @property
    def policy_summary_required(self) -> bool:
        return self.remote.gpg_verify_summary or self.remote.sign_verify_summary

    def _local_ref(self, ref: str) -> str:
        if self.opts.mirror or self.remote.name is None:
            return ref
        return f"{self.remote.name}:{ref}"

    def _check_remote_config(self) -> None:
        data = self.fetcher.fetch("config", max_size=1024 * 1024, optional=True,
                                  validate=_parse_config)
        if data is None:
            return
        kf = _parse_config(data)
        mode = kf.get("core", "mode") or ""
        if mode not in ("archive", "archive-z2"):
            raise FormatError(f"remote repository mode is {mode!r}, not archive",
                              "serve an archive-mode repository over HTTP")

    def _load_summary(self, *, required: bool) -> None:
        self.stats.phase = "summary"
        cache = SummaryCache(self.repo.path, self.remote.name) if self.remote.name else None
        sig, data, fresh = self._fetch_summary(cache)
        if data is None:
            if required or self.policy_summary_required:
                raise NotFoundError(f"{self.remote.url} has no summary",
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
                    raise NotFoundError(f"{self.remote.url} has no summary") from None
                self._verify_summary(data, sig)
        self.summary = sm.parse(data)
        self.summary_bytes, self.summary_sig = data, sig
        if cache is not None:  # only what passed every check above is kept
            for is_sig, f in fresh.items():
                if f.data is not None:
                    cache.store(sig=is_sig, data=f.data, validators=f.validators)

    def _verify_summary(self, data: bytes, sig: bytes | None) -> None:
        meta = ob.decode_metadata_dict(sig) if sig is not None else None
        forced = self.opts.policy  # an explicit policy can only switch checks off here
        pol = sign.TrustPolicy(
            gpg=self.remote.gpg_verify_summary and (forced is None or forced.gpg),
            ed25519=self.remote.sign_verify_summary and (forced is None or forced.ed25519),
            gpg_keyrings=self.policy.gpg_keyrings,
            ed25519_keys=self.policy.ed25519_keys)
        sign.verify("summary", data, meta, pol)

    def _fetch_summary(self, cache: SummaryCache | None
                       ) -> tuple[bytes | None, bytes | None, dict[bool, Fresh]]:
        """``(summary.sig, summary, fresh downloads)``, reusing the cached copies.

        As libostree: a ``304`` for ``summary.sig`` means the cached summary is current and
        is not requested at all. Beyond it: an unsigned summary is revalidated by its own
        ETag. A cached copy that no longer parses is ignored.
        """
        cached_sig = cache.load(sig=True) if cache else None
        cached = cache.load(sig=False) if cache else None
        if cached is not None:
            try:
                sm.parse(cached.data)
            except FormatError:
                cached = None
        fresh: dict[bool, Fresh] = {}
        sig_f = self.fetcher.fetch_fresh(
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
        sum_f = self.fetcher.fetch_fresh(
            "summary", max_size=min(sm.MAX_SUMMARY, self.opts.max_metadata_size),
            validate=sm.parse, cached=cached.validators if cached and sig is None else None)
        if sum_f is None:
            return sig, None, fresh
        if sum_f.data is None and cached is not None:
            return sig, cached.data, fresh
        fresh[False] = sum_f
        return sig, sum_f.data, fresh

    def _resolve_ref(self, ref: str) -> str:
        if self.summary is not None:
            entry = self.summary.lookup(ref)
            if entry is None:
                raise NotFoundError(f"remote {self.remote.name or self.remote.url} has no "
                                    f"ref {ref!r}")
            return entry.commit
        data = self.fetcher.fetch(f"refs/heads/{ref}", max_size=1024, optional=True,
                                  validate=_check_ref_body)
        if data is None:
            raise NotFoundError(f"remote {self.remote.url} has no ref {ref!r}")
        text = data.decode("ascii", "replace").strip()
        if not ob.CHECKSUM_RE.match(text):
            raise FormatError(f"remote ref {ref} holds {text[:40]!r}, not a checksum",
                              "the server answered with something else (an HTML page?)")
        return text

    def _mirror_summary(self) -> None:
        from atomicedge.fsutil import atomic_write
        assert self.summary_bytes is not None
        atomic_write(self.repo.path / "summary", self.summary_bytes)
        if self.summary_sig is not None:
            atomic_write(self.repo.path / "summary.sig", self.summary_sig)

    # -- one commit --------------------------------------------------------------------

    def _pull_commit(self, ref: str, csum: str) -> None:
        repo = self.repo
        if (repo.has_object(csum, ObjectType.COMMIT) and not repo.is_partial(csum)
                and not self.opts.commit_metadata_only and self.opts.depth == 0):
            log.info("%s is already complete", csum)
            return
        if not self.opts.commit_metadata_only and not self.opts.disable_static_deltas:
            from atomicedge.remote import delta_pull
            if delta_pull.try_delta(self, ref, csum):
                return
        elif self.opts.require_static_deltas:
            raise UsageError("--require-static-deltas conflicts with the other options")
        chain = self._fetch_commits(ref, csum)
        if self.opts.commit_metadata_only:
            return
        for c in chain:
            self.pull_tree(c)

    def _fetch_commits(self, ref: str, csum: str) -> list[str]:
        """Fetch, verify and store the commit (and ``depth`` parents); all marked partial."""
        self.stats.phase = "commits"
        out = []
        cur: str | None = csum
        level = 0
        while cur is not None:
            try:
                commit = self.fetch_commit(cur, ref if level == 0 else None)
            except NotFoundError:
                if level == 0:
                    raise
                break  # a shallow remote: history stops here
            out.append(cur)
            if self.opts.depth >= 0 and level >= self.opts.depth:
                break
            cur = commit.parent
            level += 1
        return out

    def fetch_commit(self, csum: str, ref: str | None) -> Commit:
        repo = self.repo
        if repo.has_object(csum, ObjectType.COMMIT):
            commit = repo.load_commit(csum)
            self.note_sizes(commit)
            return commit
        meta_bytes = self.fetcher.fetch(_objpath(csum, "commitmeta"),
                                        max_size=self.opts.max_metadata_size, optional=True,
                                        validate=ob.decode_metadata_dict)
        data = self.fetcher.fetch(_objpath(csum, "commit"), max_size=self.opts.max_metadata_size,
                                  validate=lambda d: _check_meta(d, csum, ObjectType.COMMIT))
        assert data is not None
        meta = ob.decode_metadata_dict(meta_bytes) if meta_bytes is not None else None
        return self.store_commit(csum, data, meta, ref)

    def store_commit(self, csum: str, data: bytes, meta: dict[str, Any] | None,
                     ref: str | None) -> Commit:
        """Verify signature and ref binding, then write the commit marked partial."""
        commit = Commit.decode(data)
        sign.verify(f"commit {csum}", data, meta, self.policy)
        if ref is not None:
            bound = commit.meta_value("ostree.ref-binding")
            if bound is not None and ref not in bound:
                raise CorruptionError(f"commit {csum} is bound to {bound}, not to {ref}",
                                      "the server is offering a commit of another branch")
        self.mark_partial(csum)
        if meta is not None:
            self.repo.write_detached_metadata(csum, meta)
        with self.repo.transaction() as tx:
            tx.write_metadata(ObjectType.COMMIT, data, expected=csum)
        self.stats.metadata_fetched += 1
        self.note_sizes(commit)
        return commit

    def note_sizes(self, commit: Commit) -> None:
        """Remember ``ostree.sizes`` (archived sizes) to cap each download exactly."""
        v = commit.metadata.get("ostree.sizes")
        if v is None or v.type != "aay":
            return
        for entry in v.value:
            e = bytes(entry)
            if len(e) < 34:
                continue
            try:
                archived, _pos = ob.decode_varint(e, 32)
            except FormatError:
                continue
            self._sizes[e[:32].hex()] = archived

    def mark_partial(self, csum: str) -> None:
        path = self.repo.path / "state" / f"{csum}.commitpartial"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_bytes(b"")

    def clear_partial(self, csum: str) -> None:
        (self.repo.path / "state" / f"{csum}.commitpartial").unlink(missing_ok=True)

    # -- trees -------------------------------------------------------------------------

    def pull_tree(self, csum: str) -> None:
        """Fetch every missing object of commit ``csum``'s tree, then clear its partial.

        Metadata goes level by level (a dirtree names the next level) into one transaction,
        walking the fetched dirtrees from memory: a commit per level would cost a syncfs
        each. Content then goes in committed batches, so an interrupted pull resumes.
        """
        commit = self.repo.load_commit(csum)
        self.stats.phase = "metadata"
        frontier: list[ObjRef] = [(commit.root_tree, ObjectType.DIR_TREE),
                                  (commit.root_meta, ObjectType.DIR_META)]
        seen: set[ObjRef] = set(frontier)
        files: set[str] = set()
        self._trees = {}
        with self.repo.transaction() as tx:
            while frontier:
                self._fetch_threaded(tx, self._missing(frontier))
                nxt: list[ObjRef] = []
                for c, t in frontier:
                    if t != ObjectType.DIR_TREE:
                        continue
                    fresh = self._trees.pop(c, None)
                    tree = DirTree.decode(fresh) if fresh else self.repo.load_dirtree(c)
                    files.update(f for _n, f in tree.files)
                    for _n, sub, meta in tree.dirs:
                        for o in ((sub, ObjectType.DIR_TREE), (meta, ObjectType.DIR_META)):
                            if o not in seen:
                                seen.add(o)
                                nxt.append(o)
                frontier = nxt
        self._trees = None
        self.stats.phase = "content"
        self.fetch_objects([(f, ObjectType.FILE) for f in sorted(files)])
        self.clear_partial(csum)
        self.tick(force=True)

    def _missing(self, objs: list[ObjRef]) -> list[ObjRef]:
        """The ones among ``objs`` this repo lacks (counted as done if present)."""
        self.stats.objects_total += len(objs)
        if len(objs) > BULK_CHECK:  # one listing beats thousands of stat()s
            have = set(self.repo.iter_objects())
            missing = [o for o in objs if o not in have]
        else:
            missing = [o for o in objs if not self.repo.has_object(*o)]
        self.stats.objects_done += len(objs) - len(missing)
        return missing

    def fetch_objects(self, objs: list[ObjRef]) -> None:
        """Download and store the missing ones among ``objs``, in committed batches.

        A failure stops the batch's other workers at their next object; the batch is then
        not committed, but every earlier batch is, so a re-run resumes from there.
        """
        missing = self._missing(objs)
        batches = [missing[i:i + BATCH] for i in range(0, len(missing), BATCH)]
        if len(missing) >= FORK_MIN and forkpool.workers() > 1:
            self.workers.stage([[(_fetch_chunk, (batch[i:i + FORK_CHUNK],))
                                 for i in range(0, len(batch), FORK_CHUNK)]
                                for batch in batches])
            return
        for batch in batches:
            with self.repo.transaction() as tx:
                self._fetch_threaded(tx, batch)

    def _fetch_threaded(self, tx: Transaction, batch: list[ObjRef]) -> None:
        n = self._pipelines()
        abort = threading.Event()
        futures = [self.pool.submit(self._fetch_slice, tx, batch[k::n], abort)
                   for k in range(min(n, len(batch)))]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def absorb(self, report: Report) -> None:
        """Counters a forked worker moved (see :mod:`pull_workers`)."""
        with self._stats_lock:
            self.stats.metadata_fetched += report.metadata
            self.stats.content_fetched += report.content
            self.stats.objects_done += report.done
        self.fetcher.absorb(report.wire)

    def _fetch_slice(self, tx: Transaction, objs: list[ObjRef], abort: threading.Event) -> None:
        """One connection's share: pipelined, with the careful path for what that misses."""
        try:
            paths = [_objpath(c, t.ext if t != ObjectType.FILE else "filez") for c, t in objs]
            caps = [self._cap(o) for o in objs]
            source = self.content if objs and objs[0][1] == ObjectType.FILE else self.fetcher
            for i, data in source.fetch_many(paths, caps):
                if abort.is_set():
                    return
                if data is None or not self._store(tx, objs[i], data):
                    self._fetch_one(tx, objs[i])
                with self._stats_lock:
                    self.stats.objects_done += 1
                self.tick()
        except BaseException:
            abort.set()
            raise

    def _cap(self, obj: ObjRef) -> int:
        if obj[1] == ObjectType.FILE:
            return self._sizes.get(obj[0], self.opts.max_file_size)
        return self.opts.max_metadata_size

    def _verify(self, obj: ObjRef, data: bytes) -> tuple[FileHeader, bytes | None] | None:
        """Raise CorruptionError unless ``data`` is object ``obj``; a file's header and
        (for repos that store it inflated) its content."""
        csum, objtype = obj
        if objtype == ObjectType.FILE:
            return verify_filez(data, csum, self.opts.max_file_size, not self.repo.is_archive)
        _check_meta(data, csum, objtype)
        return None

    def _store(self, tx: Transaction, obj: ObjRef, data: bytes) -> bool:
        """Verify ``data`` as object ``obj`` and stage it; False (nothing stored) if bad."""
        try:
            verified = self._verify(obj, data)
        except CorruptionError as exc:
            log.info("refetching %s.%s: %s", obj[0], obj[1].ext, exc.message)
            self.fetcher.absorb(FetchStats(retries=1))
            return False
        self._stage(tx, obj, data, verified)
        return True

    def _stage(self, tx: Transaction, obj: ObjRef, data: bytes,
               verified: tuple[FileHeader, bytes | None] | None) -> None:
        csum, objtype = obj
        if verified is None:
            tx.write_metadata(objtype, data, expected=csum, known_missing=True)
            if objtype == ObjectType.DIR_TREE and self._trees is not None:
                self._trees[csum] = data
            with self._stats_lock:
                self.stats.metadata_fetched += 1
            return
        header, content = verified
        if content is not None:
            tx.write_content_trusted(csum, header, content, known_missing=True)
        else:
            tx.write_filez_verbatim(csum, data, known_missing=True)
        with self._stats_lock:
            self.stats.content_fetched += 1

    def _fetch_one(self, tx: Transaction, obj: ObjRef) -> None:
        """The careful path: urllib3 with retries, backoff, redirects and validation."""
        csum, objtype = obj
        ext = objtype.ext if objtype != ObjectType.FILE else "filez"
        holder: list[tuple[FileHeader, bytes | None] | None] = []

        def check(data: bytes) -> None:
            holder[:] = [self._verify(obj, data)]

        source = self.content if objtype == ObjectType.FILE else self.fetcher
        data = source.fetch(_objpath(csum, ext), max_size=self._cap(obj), validate=check)
        assert data is not None
        self._stage(tx, obj, data, holder[0])


def _fetch_chunk(p: Puller, tx: Transaction, objs: list[ObjRef]) -> None:
    """A forked worker's task: one chunk of a content batch (see :mod:`pull_workers`)."""
    p._fetch_slice(tx, objs, threading.Event())


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


def _objpath(csum: str, ext: str) -> str:
    return f"objects/{csum[:2]}/{csum[2:]}.{ext}"


def _check_meta(data: bytes, csum: str, objtype: ObjectType) -> None:
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
