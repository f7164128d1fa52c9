"""What one pull shares: the repo, the remote, the options, the connections, the counters.

The puller (:mod:`pull`), the static-delta path (:mod:`delta_pull`), the tree walk
(:mod:`trees`), the object downloads (:mod:`objfetch`) and the forked workers
(:mod:`workers`) all work on one :class:`PullContext`. It is the bottom of the pull's
modules: each of them imports only downward (pull -> delta_pull -> trees -> workers,
objfetch -> context), so none of them reaches into another one's privates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from atomicedge.ostree import summary as sm
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.remote import config as rem
from atomicedge.remote.http import FetchStats
from atomicedge.remote.mirrors import Source, open_source
from atomicedge.trust import sign

MAX_METADATA = 128 * 1024 * 1024
MAX_FILE = 4 * 1024 * 1024 * 1024
PIPELINES = 2  # pipelined connections (32 requests in flight each); more only adds GIL churn
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


def policy_for(remote: rem.Remote) -> sign.TrustPolicy:
    keyrings = [remote.gpg_keyring] if remote.gpg_keyring else []
    return sign.TrustPolicy(gpg=remote.gpg_verify, ed25519=remote.sign_verify,
                            gpg_keyrings=keyrings, ed25519_keys=list(remote.ed25519_keys))


class PullContext:
    """One pull's state, shared by the puller, the delta path and the workers.

    ``fetcher`` serves metadata (the remote's ``url``), ``content`` serves content objects
    and delta parts (its ``contenturl``, a CDN, if it has one). ``sizes`` are the archived
    sizes from ``ostree.sizes`` (exact download caps); ``dirtrees`` holds the dirtrees fetched
    in the current level of a tree walk, so the walk does not read them back from disk.
    """

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
        self.content: Source = open_source(remote.contenturl, **kw) if remote.contenturl \
            else self.fetcher
        self.pipelines = max(1, min(opts.connections, PIPELINES))
        self.pool = ThreadPoolExecutor(max_workers=self.pipelines)
        self.summary: sm.Summary | None = None
        self.sizes: dict[str, int] = {}
        self.dirtrees: dict[str, bytes] | None = None
        self._last_tick = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()
        if self.content is not self.fetcher:
            self.content.close()

    def detach(self) -> None:
        """In a forked worker: connections of its own (never the parent's pooled
        sockets), and no progress callback (the parent owns the terminal)."""
        separate = self.content is not self.fetcher
        self.fetcher = self.fetcher.clone()
        self.content = self.content.clone() if separate else self.fetcher
        self.progress = None

    def fetch_stats(self) -> FetchStats:
        """What crossed the wire so far, from the remote's url and its contenturl together
        (a snapshot: a fetcher counts in place, and a worker reports the difference)."""
        return self._wire() + FetchStats()

    def _wire(self) -> FetchStats:
        """The live counters (no copy: read on every object by :meth:`tick`)."""
        if self.content is self.fetcher:
            return self.fetcher.stats
        return self.fetcher.stats + self.content.stats

    def count(self, *, metadata: int = 0, content: int = 0, done: int = 0) -> None:
        """Move the object counters (thread-safe: the fetch threads share them)."""
        with self._lock:
            self.stats.metadata_fetched += metadata
            self.stats.content_fetched += content
            self.stats.objects_done += done

    def tick(self, force: bool = False) -> None:
        """Refresh the wire counters and call the progress callback (at most 10/s)."""
        fs = self._wire()
        self.stats.bytes, self.stats.requests, self.stats.retries = (
            fs.bytes, fs.requests, fs.retries)
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_tick > 0.1):
            self._last_tick = now
            self.progress(self.stats)

    def local_ref(self, ref: str) -> str:
        """Where ``ref`` lands here: ``REMOTE:REF``, or ``REF`` for a URL or a mirror."""
        if self.opts.mirror or self.remote.name is None:
            return ref
        return f"{self.remote.name}:{ref}"

    def cap(self, obj: ObjRef) -> int:
        """The most bytes a download of ``obj`` may have."""
        if obj[1] == ObjectType.FILE:
            return self.sizes.get(obj[0], self.opts.max_file_size)
        return self.opts.max_metadata_size
