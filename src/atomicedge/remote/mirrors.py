"""Where a remote's files come from: one URL, or a ``mirrorlist=`` of them (ostree's syntax).

A remote's ``url`` (and its ``contenturl``, the place for content objects and delta parts,
typically a CDN) is either a repository URL or ``mirrorlist=URL``, where that URL serves
a text file with one repository URL per line. Each request goes to the mirror that last
worked; on failure, or on a 404 from a mirror that may lag behind, the next mirror is
tried, and a file is missing only when every mirror says so. Every byte is still verified
by the pull client, so a mirror is trusted for availability, never for content.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from atomicedge.errors import AtomicEdgeError, NotFoundError, UsageError
from atomicedge.remote.config import MIRRORLIST
from atomicedge.remote.http import Fetcher, FetchStats, Fresh, Validator, Validators

MAX_MIRRORLIST = 1024 * 1024


def parse_mirrorlist(text: str, source: str) -> list[str]:
    """The repository URLs of a mirrorlist file (blank lines and ``#`` comments skipped)."""
    urls = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if urlsplit(line).scheme not in ("http", "https", "file"):
            raise UsageError(f"{source} line {n}: {line[:80]!r} is not an http(s):// or "
                             "file:// URL", "fix the mirrorlist on the server")
        urls.append(line)
    if not urls:
        raise UsageError(f"{source} lists no mirrors", "fix the mirrorlist on the server")
    return urls


class Mirrors:
    """Several copies of one repository behind the :class:`Fetcher` interface."""

    def __init__(self, urls: list[str], **kw: Any) -> None:
        self.url = urls[0]
        self.retries: int = kw.get("retries", 5)
        self._kw = kw
        self._sleep: Callable[[float], None] = kw.get("sleep", time.sleep)
        self._backoff: float = kw.get("backoff", 0.1)
        # each mirror gets one attempt per round; the rounds do the retrying
        self.members = [Fetcher(u, **{**kw, "retries": 0}) for u in urls]
        self._current = 0
        self._lock = threading.Lock()

    @property
    def stats(self) -> FetchStats:
        return sum((f.stats for f in self.members), FetchStats())

    def clone(self) -> Mirrors:
        return Mirrors([f.url for f in self.members], **self._kw)

    def absorb(self, extra: FetchStats) -> None:
        self.members[0].absorb(extra)

    def close(self) -> None:
        for f in self.members:
            f.close()

    def _order(self) -> list[int]:
        with self._lock:
            first = self._current
        return [(first + k) % len(self.members) for k in range(len(self.members))]

    def _try(self, call: Callable[[Fetcher], Any], optional: bool, path: str) -> Any:
        last: AtomicEdgeError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(self._backoff * 2 ** (attempt - 1), 5.0))
            missing = failed = 0
            for i in self._order():
                try:
                    result = call(self.members[i])
                except NotFoundError as exc:
                    missing += 1
                    last = exc
                    continue
                except AtomicEdgeError as exc:  # down, corrupt, over a cap: next mirror
                    failed += 1
                    last = exc
                    continue
                with self._lock:
                    self._current = i
                return result
            if missing and missing + failed == len(self.members):
                # every mirror that answered says 404 (the others are down): it is absent
                if optional:
                    return None
                raise NotFoundError(f"{path} is on none of the {len(self.members)} mirrors")
        assert last is not None
        raise last

    def fetch(self, path: str, *, max_size: int, optional: bool = False,
              validate: Validator | None = None) -> bytes | None:
        def call(f: Fetcher) -> bytes | None:
            return f.fetch(path, max_size=max_size, validate=validate)

        result: bytes | None = self._try(call, optional, path)
        return result

    def fetch_fresh(self, path: str, *, max_size: int, cached: Validators | None,
                    validate: Validator | None = None) -> Fresh | None:
        def call(f: Fetcher) -> Fresh:
            got = f.fetch_fresh(path, max_size=max_size, cached=cached, validate=validate)
            if got is None:
                raise NotFoundError(path)
            return got

        result: Fresh | None = self._try(call, True, path)
        return result

    def fetch_many(self, paths: Sequence[str], caps: Sequence[int]
                   ) -> Iterator[tuple[int, bytes | None]]:
        """Pipelined from the current mirror; the caller's careful path tries the rest."""
        return self.members[self._order()[0]].fetch_many(paths, caps)


Source = Fetcher | Mirrors


def open_source(spec: str, **kw: Any) -> Source:
    """A fetcher for a remote's ``url``/``contenturl`` value (a URL or ``mirrorlist=URL``)."""
    if not spec.startswith(MIRRORLIST):
        return Fetcher(spec, **kw)
    list_url = spec[len(MIRRORLIST):]
    base, _slash, name = list_url.rstrip("/").rpartition("/")
    if not name or not base:
        raise UsageError(f"mirrorlist URL {list_url!r} names no file",
                         "use mirrorlist=http://host/path/to/mirrors.txt")
    with Fetcher(base, **kw) as f:
        data = f.fetch(unquote(name), max_size=MAX_MIRRORLIST)
    assert data is not None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"mirrorlist {list_url} is not UTF-8 text") from None
    urls = parse_mirrorlist(text, f"mirrorlist {list_url}")
    return Mirrors(urls, **kw) if len(urls) > 1 else Fetcher(urls[0], **kw)
