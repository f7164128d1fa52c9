"""``atomicedge repo serve``: an archive repository as static files over HTTP (aiohttp).

The protocol is libostree's "dumb" one, so any static server works (see
docs/serve-and-update.md for nginx); this one adds what the demo and the tests need:

* a log line per request with the running totals (files served, cumulative bytes), as the
  seed demo's server printed, and the same counters as JSON at ``/stats``;
* HEAD, Range, ETag/Last-Modified and conditional requests (aiohttp's FileResponse);
* 404 for anything that is not a regular file under the repository (directories, ``..``,
  symlinks leading outside), so the server cannot be used to read the rest of the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from atomicedge.errors import NotFoundError, UsageError

log = logging.getLogger("atomicedge.serve")


@dataclass
class ServeStats:
    """Counters since the server started (``/stats`` is not counted)."""

    files: int = 0
    bytes: int = 0
    requests: int = 0
    not_found: int = 0
    started: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def safe_path(root: Path, url_path: str) -> Path | None:
    """The regular file ``url_path`` names under ``root``, or None (escapes, dirs, missing)."""
    parts = [p for p in url_path.split("/") if p]
    if any(p in (".", "..") or "\0" in p or "\\" in p for p in parts):
        return None
    full = root.joinpath(*parts) if parts else root
    try:
        real = full.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real != root and root not in real.parents:
        return None
    return real if real.is_file() else None


_CONDITIONAL = ("Range", "If-None-Match", "If-Modified-Since", "If-Match",
                "If-Unmodified-Since", "If-Range")
SMALL_FILE = 128 * 1024


def _small_file_response(request: web.Request, path: Path) -> web.Response | None:
    """Plain GET/HEAD of a small object: one read, no executor hops (most pull requests).

    Anything conditional or ranged goes to FileResponse, which implements those rules; the
    validators sent here are the ones FileResponse would send, so caches see one resource.
    """
    if any(h in request.headers for h in _CONDITIONAL):
        return None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > SMALL_FILE:
                return None
            body = f.read()
    except OSError:
        return None
    resp = web.Response(body=body, content_type="application/octet-stream")
    resp.headers["ETag"] = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    resp.last_modified = st.st_mtime
    resp.headers["Accept-Ranges"] = "bytes"
    return resp


def make_app(root: Path, stats: ServeStats, *, quiet: bool = False) -> web.Application:
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/stats":
            return web.json_response(stats.as_json())
        path = safe_path(root, request.path)
        if path is None:
            return web.Response(status=404, text="not found\n")
        fast = _small_file_response(request, path)
        if fast is not None:
            return fast
        return web.FileResponse(path, chunk_size=256 * 1024)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle, allow_head=True)
    return app


def _access_logger(stats: ServeStats, quiet: bool) -> type[AbstractAccessLogger]:
    lock = threading.Lock()

    class CountingLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse,
                time: float) -> None:
            if request.path == "/stats":
                return
            size = 0
            with lock:
                stats.requests += 1
                if request.method == "GET" and response.status in (200, 206):
                    size = response.content_length or 0
                    stats.files += 1
                    stats.bytes += size
                elif response.status == 404:
                    stats.not_found += 1
                files, total = stats.files, stats.bytes
            if not quiet:
                print(f"{request.method} {request.path} {response.status} {size} B "
                      f"| served {files} files, {total} bytes", flush=True)

    return CountingLogger


class Server:
    """A running server (in a background thread); ``with Server(...) as s: s.url``."""

    def __init__(self, repo_path: Path, *, bind: str = "127.0.0.1", port: int = 0,
                 quiet: bool = True) -> None:
        self.root = Path(repo_path)
        if not (self.root / "objects").is_dir():
            raise NotFoundError(f"{self.root} is not an OSTree repository")
        self.bind, self.port, self.quiet = bind, port, quiet
        self.stats = ServeStats()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    async def _start(self) -> None:
        app = make_app(self.root, self.stats, quiet=self.quiet)
        self._runner = web.AppRunner(app, access_log_class=_access_logger(self.stats,
                                                                          self.quiet),
                                     handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def start(self) -> Server:
        self._loop.run_until_complete(self._start())
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._cleanup(), self._loop)
        try:
            fut.result(timeout=10)
        except Exception as exc:  # a hung client must not keep the server alive
            log.warning("server cleanup: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_running():
            self._loop.close()
        self._thread = None

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(repo_path: Path, bind: str = "127.0.0.1", port: int = 8080) -> None:
    """Foreground server for the CLI: prints the URL, then one line per request."""
    server = Server(repo_path, bind=bind, port=port, quiet=False)
    try:
        server.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {bind}:{port}: {exc.strerror}",
                         "pick another --port") from None
    print(f"serving {repo_path} on {server.url} (stats at {server.url}/stats)", flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        assert server._thread is not None
        while server._thread.is_alive():
            server._thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _raise_interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m atomicedge.store.serve --repo PATH [--bind] [--port]`` (tests, bench)."""
    p = argparse.ArgumentParser(prog="atomicedge-serve")
    p.add_argument("--repo", required=True, type=Path)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    a = p.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        serve_forever(a.repo, a.bind, a.port)
    except (NotFoundError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
