"""``atomicedge composer serve``: the weldr API on a unix socket (and optionally TCP), the
workers, the reaper of stale jobs, and the static web UI.

Access: the unix socket (default ``/run/weldr/api.socket``) is mode 0660, owned by root and a
group (``weldr`` when it exists), as osbuild-composer's socket unit makes it: file permissions
are the authentication. TCP is opt-in and every API request on it must carry
``Authorization: Bearer TOKEN`` (the token file is created, mode 0600, when missing); the UI's
static files are public, they hold no data. Unknown routes get osbuild-composer's 404
``HTTPError`` body, a bug in a handler a 500 ``InternalError`` body (never a traceback).
"""

from __future__ import annotations

import asyncio
import grp
import hmac
import logging
import mimetypes
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from atomicedge.compose.apt import Sources
from atomicedge.composer import api, api_compose
from atomicedge.composer.api import CTX, Context, error, not_found
from atomicedge.composer.db import open_database
from atomicedge.composer.packages import PackageSource
from atomicedge.composer.queue import Queue
from atomicedge.composer.store import BlueprintStore
from atomicedge.composer.worker import start_workers, stop_workers
from atomicedge.errors import UsageError
from atomicedge.fsutil import atomic_write

log = logging.getLogger("atomicedge.composer")
UI_DIR = Path(__file__).parent / "ui"
DEFAULT_SOCKET = Path("/run/weldr/api.socket")
IS_TCP: web.AppKey[bool] = web.AppKey("is_tcp", bool)


@dataclass
class ServeOptions:
    state: Path
    sources: Sources
    profile: str
    arch: str
    cache_root: Path
    socket: Path | None = DEFAULT_SOCKET
    listen: str | None = None
    db: str | None = None
    workers: int = 1
    token_file: Path | None = None
    group: str | None = None
    job_timeout: float = 120.0
    image_types: tuple[str, ...] = ("edge-commit",)


def load_token(path: Path) -> str:
    """Read the API token, or create one (0600) when the file does not exist."""
    if not path.exists():
        atomic_write(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    token = path.read_text().strip()
    if len(token) < 16:
        raise UsageError(f"--token-file {path}: token shorter than 16 characters",
                         "delete the file to have a new token generated")
    return token


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} is not ADDRESS:PORT", "e.g. --listen 127.0.0.1:8700")
    return host.strip("[]") or "127.0.0.1", int(port)


def _tcp(request: web.Request) -> bool:
    return isinstance(request.transport.get_extra_info("sockname") if request.transport
                      else None, tuple)


def middlewares(token: str | None) -> list:
    @web.middleware
    async def auth(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if _tcp(request) and request.path.startswith("/api"):
            given = request.headers.get("Authorization", "")
            if token is None or not hmac.compare_digest(given.encode(),
                                                        f"Bearer {token}".encode()):
                return error(401, ("HTTPError", "Unauthorized: a valid 'Authorization: "
                                                "Bearer TOKEN' header is required"))
        return await handler(request)

    @web.middleware
    async def errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed:
            return web.Response(status=405)
        except web.HTTPNotFound:
            return not_found()
        except web.HTTPException:
            raise
        except Exception as exc:  # one JSON error, the details in the log
            log.exception("%s %s", request.method, request.path)
            return error(500, ("InternalError", f"internal error: {type(exc).__name__}"))
    return [errors, auth]


async def ui_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def ui_file(request: web.Request) -> web.StreamResponse:
    rel = request.match_info.get("path", "") or "index.html"
    root = UI_DIR.resolve()
    try:
        path = (root / rel).resolve()
        found = root in path.parents and path.is_file()
    except (ValueError, OSError):    # NUL bytes, names too long
        found = False
    if not found:
        return web.Response(status=404, text="not found\n")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.Response(body=path.read_bytes(), content_type=ctype)


def make_app(context: Context, token: str | None) -> web.Application:
    app = web.Application(middlewares=middlewares(token), client_max_size=16 * 1024 * 1024)
    app[CTX] = context
    api.add_routes(app)
    api_compose.add_routes(app)
    app.router.add_get("/", ui_redirect)
    app.router.add_get("/ui/{path:.*}", ui_file)
    return app


def _prepare_socket(path: Path, group: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket() or path.exists():
        path.unlink()


def _secure_socket(path: Path, group: str | None) -> None:
    gid = 0
    name = group or "weldr"
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        if group:
            raise UsageError(f"--group {group!r} does not exist", "create it with groupadd") \
                from None
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid if os.geteuid() == 0 else -1)
    os.chmod(path, 0o660)


async def _reaper(queue: Queue, timeout: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            moved = await asyncio.to_thread(queue.requeue_stale, timeout)
            for job_id in moved:
                log.warning("compose %s: its worker stopped responding", job_id)
        except Exception:  # keep reaping
            log.exception("reaper")
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except TimeoutError:
            pass


async def run(opts: ServeOptions) -> None:
    if opts.socket is None and opts.listen is None:
        raise UsageError("nothing to listen on", "pass --socket PATH and/or --listen ADDR:PORT")
    token = load_token(opts.token_file) if opts.token_file else None
    if opts.listen and token is None:
        raise UsageError("--listen needs --token-file", "TCP clients must send a token")
    opts.state.mkdir(parents=True, exist_ok=True)
    db = open_database(opts.db, opts.state)
    queue = Queue(db)
    queue.requeue_stale(opts.job_timeout)
    pkgs = PackageSource(opts.sources, opts.cache_root, opts.arch, opts.profile)
    wakeup = threading.Event()
    context = Context(BlueprintStore(db), queue, pkgs, opts.state, wakeup, opts.image_types)
    threading.Thread(target=_warm, args=(pkgs,), daemon=True).start()
    workers = start_workers(queue, opts.state, opts.workers, cache_root=opts.cache_root,
                            wakeup=wakeup)
    runner = web.AppRunner(make_app(context, token), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        where = []
        if opts.socket:
            _prepare_socket(opts.socket, opts.group)
            await web.UnixSite(runner, str(opts.socket), shutdown_timeout=5.0).start()
            _secure_socket(opts.socket, opts.group)
            where.append(f"unix:{opts.socket}")
        if opts.listen:
            host, port = parse_listen(opts.listen)
            await web.TCPSite(runner, host, port, shutdown_timeout=5.0).start()
            where.append(f"http://{host}:{port}")
        print(f"composer: listening on {', '.join(where)} ({db.kind}, "
              f"{opts.workers} worker(s))", flush=True)
        await _reaper(queue, opts.job_timeout, stop)
    finally:
        await asyncio.to_thread(stop_workers, workers)
        await runner.cleanup()
        db.close()
        if opts.socket and opts.socket.is_socket():
            opts.socket.unlink()


def _warm(pkgs: PackageSource) -> None:
    try:
        pkgs.index()
    except Exception as exc:  # the first API call reports it properly
        log.warning("package index not ready: %s", exc)


def serve(opts: ServeOptions) -> None:
    asyncio.run(run(opts))


def run_worker(opts: ServeOptions) -> None:
    """``atomicedge composer worker``: workers only, artifacts into the database."""
    db = open_database(opts.db, opts.state)
    if db.kind != "postgresql" and opts.db is None:
        raise UsageError("a separate worker needs the server's database",
                         "pass --db postgresql://... (or the server's sqlite:///PATH)")
    queue = Queue(db)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    workers = start_workers(queue, opts.state, opts.workers, cache_root=opts.cache_root,
                            artifacts="db", prefix="remote")
    print(f"composer worker: {opts.workers} worker(s) on {db.kind}", flush=True)
    while not stop.wait(1.0):
        pass
    stop_workers(workers)
    db.close()
