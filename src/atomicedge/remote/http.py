"""The HTTP (and file://) seam of the pull client: pooled connections, caps, retries.

Everything the pull client downloads goes through :class:`Fetcher`, so the rules that keep a
flaky edge link from hurting the repository live in one place:

* every download has a byte cap, checked while reading (an endless or oversized body is
  cut off and refused, memory stays bounded);
* transient failures (connection reset, stall past the read timeout, truncated body, 5xx,
  408, 429, a body that fails the caller's verification) are retried with exponential
  backoff; 404 is an answer, not a failure;
* connections are pooled (urllib3) so a pull of thousands of small objects reuses a few
  keep-alive sockets, and the pool is thread-safe for the pull's worker threads.

``file://`` URLs are read straight from disk with the same caps, so a USB stick or an NFS
mount works like a server.

Devices run this on Debian 12's own python3, whose urllib3 is 1.26: only API that 1.26 and
2.x share is used (tests/net/test_debian_runtime.py pulls with it), and what differs in
their defaults is set explicitly (``enforce_content_length``, off by default in 1.26).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from atomicedge.errors import AtomicEdgeError, CorruptionError, NotFoundError, UsageError
from atomicedge.remote import pipeline

log = logging.getLogger(__name__)

Validator = Callable[[bytes], object]
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CHUNK = 256 * 1024


class FetchError(AtomicEdgeError):
    """A download failed for good (after the retries) or was refused (too big)."""


@dataclass
class FetchStats:
    """Counters for the progress bar and the benchmark: what crossed the wire."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    not_found: int = 0

    def __add__(self, other: FetchStats) -> FetchStats:
        return FetchStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: FetchStats) -> FetchStats:
        return FetchStats(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


class Fetcher:
    """Downloads paths relative to one repository URL (``http(s)://`` or ``file://``)."""

    def __init__(self, url: str, *, max_connections: int = 8, retries: int = 5,
                 backoff: float = 0.1, connect_timeout: float = 10.0,
                 read_timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep
                 ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "file"):
            raise UsageError(f"unsupported URL {url!r}",
                             "use http://, https:// or file:// URLs")
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.retries = retries
        self.backoff = backoff
        self.stats = FetchStats()
        self._sleep = sleep
        self._max_connections = max_connections
        self._timeouts = (connect_timeout, read_timeout)
        self._lock = threading.Lock()
        self._root = Path(unquote(parts.path)) if parts.scheme == "file" else None
        self._pool: urllib3.PoolManager | None = None
        self._host: urllib3.HTTPConnectionPool | None = None
        self._base = parts.path.rstrip("/")
        self._endpoint: pipeline.Endpoint | None = None
        if parts.scheme != "file":
            self._endpoint = pipeline.Endpoint(
                parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                parts.netloc.rpartition("@")[2], tls=parts.scheme == "https",
                connect_timeout=connect_timeout, read_timeout=read_timeout)
            self._pool = urllib3.PoolManager(
                num_pools=4, maxsize=max_connections, block=True,
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                retries=False, headers={"User-Agent": "atomicedge-pull/1"})
            # the repository's own host: requests go straight to its pool (no per-request
            # URL parsing); redirects elsewhere go through the PoolManager
            self._host = self._pool.connection_from_url(self.url)

    def clone(self) -> Fetcher:
        """A fetcher with the same settings and fresh connections (for a forked worker)."""
        return Fetcher(self.url, max_connections=self._max_connections, retries=self.retries,
                       backoff=self.backoff, connect_timeout=self._timeouts[0],
                       read_timeout=self._timeouts[1], sleep=self._sleep)

    def absorb(self, extra: FetchStats) -> None:
        """Add counters from elsewhere (a forked worker's fetcher, a failed verification)."""
        with self._lock:
            self.stats = self.stats + extra

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
        if self._host is not None:
            self._host.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, nbytes: int, *, retry: bool = False, not_found: bool = False) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.bytes += nbytes
            self.stats.retries += int(retry)
            self.stats.not_found += int(not_found)

    def fetch(self, path: str, *, max_size: int, optional: bool = False,
              validate: Validator | None = None) -> bytes | None:
        """Body of ``path``; None if absent and ``optional``; retried until it validates."""
        got = self._fetch(path, max_size, optional, validate, None)
        return None if got is None else got[0]

    def fetch_fresh(self, path: str, *, max_size: int, cached: Validators | None,
                    validate: Validator | None = None) -> Fresh | None:
        """A conditional GET: None if absent, ``Fresh(None, ...)`` if ``cached`` still holds.

        ``cached`` are the ETag and Last-Modified stored with an earlier copy; the server
        answers ``304`` (no body) when that copy is current, which is how a device polling
        for updates avoids downloading an unchanged summary over and over.
        """
        headers: dict[str, str] = {}
        if cached is not None and self._root is None:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        try:
            got = self._fetch(path, max_size, True, validate, headers or None)
        except _NotModified:
            return Fresh(None, cached or Validators())
        if got is None:
            return None
        data, resp_headers = got
        return Fresh(data, Validators(resp_headers.get("ETag"),
                                      resp_headers.get("Last-Modified")))

    def _fetch(self, path: str, max_size: int, optional: bool, validate: Validator | None,
               headers: dict[str, str] | None) -> tuple[bytes, dict[str, str]] | None:
        _check_relpath(path)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.backoff * (2 ** (attempt - 1)), 5.0)
                self._sleep(delay * (0.5 + random.random()))
            try:
                got = self._fetch_once(path, max_size, headers)
            except _Transient as exc:
                last = exc
                log.info("retrying %s after: %s", path, exc)
                with self._lock:
                    self.stats.retries += 1
                continue
            if got is None:
                if optional:
                    return None
                raise NotFoundError(f"{self.url}/{path} does not exist on the server")
            if validate is not None:
                try:
                    validate(got[0])
                except CorruptionError as exc:
                    last = exc
                    log.info("retrying %s: invalid body: %s", path, exc)
                    with self._lock:
                        self.stats.retries += 1
                    continue
            return got
        if isinstance(last, CorruptionError):
            raise CorruptionError(f"{path} from {self.url} is still invalid after "
                                  f"{self.retries + 1} attempts: {last.message}",
                                  "the server is serving corrupt data") from None
        raise FetchError(f"cannot fetch {self.url}/{path}: {last}",
                         "check the URL and the network; the pull can be re-run and "
                         "resumes where it stopped") from None

    def fetch_many(self, paths: Sequence[str], caps: Sequence[int]
                   ) -> Iterator[tuple[int, bytes | None]]:
        """``(index, body)`` for each of ``paths``, in order, pipelined on one connection.

        A body of None means the quick path got no usable answer (an error status, a
        reset, a stall, a reply over its cap): the caller then uses :meth:`fetch`, which
        retries, follows redirects and turns a 404 into an error. Nothing is validated
        here; the caller checks each body and also falls back to :meth:`fetch` on a bad one.
        """
        for path in paths:
            _check_relpath(path)
        if self._endpoint is None:
            for i, path in enumerate(paths):
                try:
                    yield i, self._read_file(path, caps[i])
                except FetchError:
                    yield i, None
            return
        targets = [f"{self._base}/{quote(p)}" for p in paths]
        for i, status, body in pipeline.get_many(self._endpoint, targets, caps):
            self._count(len(body) if body is not None else 0,
                        retry=status == -1 or status in _RETRY_STATUS)
            yield i, body

    def _fetch_once(self, path: str, max_size: int, headers: dict[str, str] | None = None
                    ) -> tuple[bytes, dict[str, str]] | None:
        if self._root is not None:
            data = self._read_file(path, max_size)
            return None if data is None else (data, {})
        assert self._pool is not None and self._host is not None
        url = f"{self.url}/{quote(path)}"
        try:
            resp = self._host.urlopen("GET", f"{self._base}/{quote(path)}", headers=headers,
                                      preload_content=False, redirect=False, retries=False,
                                      enforce_content_length=True)
            if 300 <= resp.status < 400 and resp.status != 304:
                resp.drain_conn()
                resp.release_conn()
                resp = self._pool.request("GET", url, headers=headers, preload_content=False,
                                          redirect=True, enforce_content_length=True)
        except Urllib3Error as exc:
            self._count(0)
            raise _Transient(str(exc)) from None
        try:
            if resp.status == 404:
                resp.drain_conn()
                self._count(0, not_found=True)
                return None
            if resp.status == 304 and headers:
                resp.drain_conn()
                self._count(0)
                raise _NotModified
            if resp.status in _RETRY_STATUS:
                resp.drain_conn()
                self._count(0)
                raise _Transient(f"HTTP {resp.status}")
            if resp.status != 200:
                resp.drain_conn()
                self._count(0)
                raise FetchError(f"{url}: HTTP {resp.status}")
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_size:
                self._count(0)
                raise _Transient(f"{declared} bytes, over the {max_size}-byte cap")
            validators = {k: v for k in ("ETag", "Last-Modified")
                          if (v := resp.headers.get(k)) is not None}
            if declared is not None and declared.isdigit():
                return self._read_declared(resp), validators  # length known, within the cap
            return self._read_capped(resp, url, max_size), validators
        finally:
            resp.release_conn()

    # (annotations only: urllib3 1.26 has no BaseHTTPResponse, its responses are HTTPResponse)
    def _read_declared(self, resp: urllib3.BaseHTTPResponse) -> bytes:
        """One read of a body whose Content-Length is known (urllib3 enforces it)."""
        try:
            data = resp.read(decode_content=False)
        except Urllib3Error as exc:
            self._count(0)
            resp.close()
            raise _Transient(f"{exc.__class__.__name__}: {exc}") from None
        self._count(len(data))
        return data

    def _read_capped(self, resp: urllib3.BaseHTTPResponse, url: str, max_size: int) -> bytes:
        buf = bytearray()
        try:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > max_size:
                    self._count(len(buf))
                    resp.close()  # never hand a half-read connection back to the pool
                    raise _Transient(f"body exceeds the {max_size}-byte cap")
        except Urllib3Error as exc:
            self._count(len(buf))
            resp.close()
            raise _Transient(f"{exc.__class__.__name__}: {exc}") from None
        self._count(len(buf))
        return bytes(buf)

    def _read_file(self, path: str, max_size: int) -> bytes | None:
        assert self._root is not None
        full = self._root / path
        try:
            with open(full, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_size:
                    raise FetchError(f"{full} is {size} bytes, over the {max_size}-byte cap")
                data = f.read(min(size, max_size) + 1)   # read(n) allocates n bytes first
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._count(0, not_found=True)
            return None
        except OSError as exc:
            raise FetchError(f"cannot read {full}: {exc.strerror}") from None
        if len(data) > max_size:
            raise FetchError(f"{full} exceeds the {max_size}-byte cap")
        self._count(len(data))
        return data


class _Transient(Exception):
    """A failure worth retrying."""


class _NotModified(Exception):
    """The server's copy is the one the caller already has."""


@dataclass(frozen=True)
class Validators:
    """What identifies one version of a remote file (for conditional requests)."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Fresh:
    """A conditional fetch's answer: ``data`` is None when the cached copy is current."""

    data: bytes | None
    validators: Validators


def _check_relpath(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"refusing to fetch suspicious path {path!r}")
