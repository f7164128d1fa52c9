"""``make demo`` act 2: the image builder story of the seeds, through the composer service.

It starts ``atomicedge composer serve`` (weldr API on a unix socket in the act's workdir, a
temporary state directory, one worker), pushes the example gateway blueprint v1, starts an
edge-commit compose and watches it with composer-cli-style status lines until FINISHED,
downloads the image tar (``compose image``) and unpacks its ``repo/`` into the act's archive
repo. That repo is then served over HTTP on loopback (the seed's ``python3 -m http.server``)
and v2 (v1 + strace) is composed with ``--url`` pointing at it, so its parent is v1. The
package diff v1 -> v2 closes the act. The server is stopped by its PID, also on error.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from atomicedge.compose import pkgdb
from atomicedge.compose.apt import Sources
from atomicedge.compose.validate import load
from atomicedge.errors import AtomicEdgeError, NotFoundError, UsageError
from atomicedge.ostree.repo import Repo
from atomicedge.remote.pull import pull

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
COMPOSE_TIMEOUT = 1800.0   # a cold edge compose downloads and unpacks a whole Debian
MAX_IMAGE = 4 << 30        # refuse to unpack image tars larger than this


def _source_args(sources: Sources | None) -> list[str]:
    """``composer serve``'s apt source options for ``sources`` (None: the machine's)."""
    if sources is None or sources.name == "host.sources":
        return []
    if sources.offline_dir is not None:
        return ["--offline-repo", str(sources.offline_dir)]
    m = re.match(r"deb (?:\[[^]]*\] )?(\S+) ", sources.text)
    if m is None:
        raise UsageError(f"apt sources {sources.name} cannot be passed to the composer",
                         "use the machine's sources, a mirror or an offline repo")
    return ["--mirror", m.group(1)]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Client:
    """The few weldr API calls the act makes, over the unix socket (lab may not import the
    composer package's client: the two are siblings in the layers)."""

    def __init__(self, socket: str, timeout: float = 120.0) -> None:
        self.socket, self.timeout = socket, timeout

    def _send(self, method: str, path: str, body: bytes | None, ctype: str | None,
              sink: Path | None = None) -> tuple[int, bytes]:
        conn = _UnixConnection(self.socket, self.timeout)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": ctype} if ctype else {})
            resp = conn.getresponse()
            if sink is not None and resp.status == 200:
                with open(sink, "wb") as fh:
                    while chunk := resp.read(1 << 20):
                        fh.write(chunk)
                return resp.status, b""
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AtomicEdgeError(f"cannot reach the composer on {self.socket}: {exc}",
                                  "see composer-serve.log in the act's workdir") from None
        finally:
            conn.close()

    def call(self, method: str, path: str, body: bytes | None = None,
             ctype: str | None = None) -> Any:
        status, data = self._send(method, path, body, ctype)
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        if status >= 300 or (isinstance(parsed, dict) and parsed.get("status") is False):
            errs = parsed.get("errors", []) if isinstance(parsed, dict) else []
            text = "; ".join(f"{e.get('id')}: {e.get('msg')}" for e in errs)
            raise AtomicEdgeError(f"{method} {path}: {text or f'HTTP {status}'}")
        return parsed

    def get(self, path: str) -> Any:
        return self.call("GET", f"/api/v1/{path}")

    def text(self, path: str) -> str:
        return self._send("GET", f"/api/v1/{path}", None, None)[1].decode(errors="replace")

    def download(self, path: str, dest: Path) -> int:
        status, data = self._send("GET", f"/api/v1/{path}", None, None, sink=dest)
        if status != 200:
            raise AtomicEdgeError(f"GET {path}: HTTP {status} {data[:200]!r}")
        return dest.stat().st_size


class ComposerProcess:
    """One ``atomicedge composer serve`` (its own session), stopped by its PID."""

    def __init__(self, work: Path, sources: Sources | None, profile: str) -> None:
        self.work = work
        self.state = Path(tempfile.mkdtemp(prefix="composer-state-", dir=work))
        sock = work / "weldr.sock"
        if len(os.fsencode(sock)) > 100:   # AF_UNIX paths are limited to 108 bytes
            sock = Path(tempfile.mkdtemp(prefix="weldr-")) / "api.sock"
        self.socket = sock
        self.log = work / "composer-serve.log"
        self.argv = [sys.executable, "-m", "atomicedge.cli.main", "composer", "serve",
                     "--socket", str(sock), "--state", str(self.state), "--workers", "1",
                     "--profile", profile, *_source_args(sources)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Client:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        client = Client(socket=str(self.socket), timeout=120)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AtomicEdgeError(f"composer serve exited ({self.proc.returncode})",
                                      f"see {self.log}")
            if self.socket.exists():
                try:
                    if client.call("GET", "/api/status").get("api") == "1":
                        return client
                except AtomicEdgeError:
                    pass
            time.sleep(0.2)
        raise AtomicEdgeError(f"composer serve not ready after {timeout:.0f} s",
                              f"see {self.log}")

    def stop(self) -> None:
        """SIGTERM the server by PID (it hands back running jobs), then kill its group."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # a build left behind, if any
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(10)
        shutil.rmtree(self.state, ignore_errors=True)
        if self.socket.parent != self.work:
            shutil.rmtree(self.socket.parent, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_http(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (an ephemeral port) for the block's duration."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def status_line(e: dict[str, Any]) -> str:
    """One ``composer-cli compose status`` row: ID, status, time, blueprint, version, type."""
    stamp = e.get("job_finished") or e.get("job_started") or e.get("job_created")
    when = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(stamp)) if stamp else ""
    size = str(e["image_size"]) if e.get("image_size") else ""
    return (f"{e['id']} {e['queue_status']:<8} {when} {e['blueprint']:<8} {e['version']:<6} "
            f"{e['compose_type']} {size}").rstrip()


def push(client: Client, path: Path, console: Console) -> None:
    client.call("POST", "/api/v1/blueprints/new", path.read_bytes(), "text/x-toml")
    info = client.get(f"blueprints/info/{load(path).name}")["blueprints"][0]
    console.print(f"  $ composer blueprints push {path.name}  [dim]-> {info['name']} "
                  f"{info['version']}[/dim]")


def start(client: Client, name: str, ostree: dict[str, str] | None, console: Console) -> str:
    req: dict[str, Any] = {"blueprint_name": name, "compose_type": "edge-commit",
                           "branch": "master"}
    verb = "start"
    if ostree is not None:
        req["ostree"] = ostree
        verb = "start-ostree " + " ".join(f"--{k} {v}" for k, v in ostree.items() if v)
    data = client.call("POST", "/api/v1/compose", json.dumps(req).encode(), "application/json")
    console.print(f"  $ composer compose {verb} {name} edge-commit\n"
                  f"  Compose {data['build_id']} added to the queue")
    return str(data["build_id"])


def watch(client: Client, build_id: str, console: Console,
          timeout: float = COMPOSE_TIMEOUT, poll: float = 1.0) -> list[str]:
    """Poll ``compose/status`` until FINISHED (FAILED raises); print each new status line
    and each new build step. Returns the status lines printed."""
    console.print(f"  $ watch composer compose status {build_id[:8]}…")
    lines: list[str] = []
    step = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        e = client.get(f"compose/status/{build_id}")["uuids"][0]
        state = e["queue_status"]
        if not lines or state not in lines[-1].split()[:2]:
            lines.append(status_line(e))
            console.print(f"  [bold]{lines[-1]}[/bold]")
        message = (e.get("progress") or {}).get("message", "")
        if message and message != step:
            step = message
            p = e["progress"]
            count = f"{p.get('done', 0)}/{p['total']} " if p.get("total") else ""
            console.print(f"    [dim]{count}{message}[/dim]")
        if state == "FINISHED":
            return lines
        if state == "FAILED":
            log = client.text(f"compose/log/{build_id}?size=4")
            raise AtomicEdgeError(f"compose {build_id} FAILED: {e.get('error', '')}",
                                  f"the log's end: {log.strip()[-300:]}")
        time.sleep(poll)
    raise AtomicEdgeError(f"compose {build_id} not finished after {timeout:.0f} s",
                          "the server's log is composer-serve.log in the act's workdir")


def _safe_extract(tar_path: Path, dest: Path) -> None:
    """Unpack ``repo/`` and ``compose.json`` only: regular files and directories, no
    absolute or ``..`` names, at most MAX_IMAGE bytes in all."""
    total = 0
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith("/") or ".." in parts or not parts \
                    or parts[0] not in ("repo", "compose.json") or not (m.isfile() or m.isdir()):
                raise AtomicEdgeError(f"{tar_path.name}: refusing member {m.name!r}",
                                      "an edge-commit tar holds repo/ and compose.json only")
            total += m.size
        if total > MAX_IMAGE:
            raise AtomicEdgeError(f"{tar_path.name}: {total} bytes unpacked is too large")
        for m in members:
            m.mode = (m.mode | 0o600) & 0o755 if m.isfile() else 0o755
            tar.extract(m, dest, set_attrs=m.isfile())


def download(client: Client, build_id: str, repo: Repo, work: Path,
             console: Console) -> dict[str, Any]:
    """``compose image``: the tar, unpacked; its commit pulled into ``repo`` and its ref set."""
    tar_path = work / f"{build_id}-commit.tar"
    size = client.download(f"compose/image/{build_id}", tar_path)
    console.print(f"  $ composer compose image {build_id[:8]}…  [dim]-> {tar_path.name} "
                  f"({size / 1e6:.1f} MB)[/dim]")
    unpacked = work / build_id
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir()
    try:
        _safe_extract(tar_path, unpacked)
        meta = json.loads((unpacked / "compose.json").read_text())
        ref, commit = meta["ref"], meta["ostree-commit"]
        pull(repo, f"file://{(unpacked / 'repo').resolve()}", [f"{ref}@{commit}"])
        repo.set_ref(ref, commit)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
        tar_path.unlink(missing_ok=True)
    return meta


def _compose_both(client: Client, repo: Repo, work: Path, examples: Path,
                  console: Console) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for version in ("v1", "v2"):
        path = examples / f"gateway-{version}.toml"
        name = load(path).name
        console.print(f"[bold]compose {name} {version}[/bold] through the composer service")
        push(client, path, console)
        if version == "v1":
            build_id = start(client, name, None, console)
            watch(client, build_id, console)
            results[version] = download(client, build_id, repo, work, console)
        else:
            ref = results["v1"]["ref"]
            # the seed: v1's repo over HTTP; the worker pulls the parent from it while building
            with serve_http(repo.path) as url:
                build_id = start(client, name, {"ref": ref, "url": url}, console)
                watch(client, build_id, console)
            results[version] = download(client, build_id, repo, work, console)
        meta = results[version]
        parent = meta.get("ostree-parent") or "none"
        console.print(f"  commit {meta['ostree-commit'][:16]}  ref {meta['ref']}  "
                      f"parent {parent[:16]}")
    return results


def run(workdir: Path, console: Console, *, sources: Sources | None = None,
        profile: str = "edge", examples: Path = EXAMPLES) -> dict[str, object]:
    """Compose v1 and v2 through the composer service into ``workdir/repo``; return commits,
    ref and the package diff."""
    if not (examples / "gateway-v1.toml").exists():
        raise NotFoundError(f"{examples}/gateway-v1.toml not found", "run from the source tree")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    repo_path = workdir / "repo"
    repo = Repo.open(repo_path) if (repo_path / "config").exists() else \
        Repo.init(repo_path, mode="archive")
    server = ComposerProcess(workdir, sources, profile)
    console.print(f"[bold]composer serve[/bold] socket {server.socket}, 1 worker, "
                  f"profile {profile}")
    try:
        client = server.start()
        results = _compose_both(client, repo, workdir, examples, console)
    finally:
        server.stop()
    v1, v2 = results["v1"]["ostree-commit"], results["v2"]["ostree-commit"]
    if results["v2"].get("ostree-parent") != v1:
        raise AtomicEdgeError(f"v2 {v2[:16]} does not have v1 {v1[:16]} as parent")
    d = pkgdb.diff(pkgdb.packages(repo, v1), pkgdb.packages(repo, v2))
    console.print("[bold]packages v1 -> v2[/bold]")
    for line in pkgdb.diff_lines(d):
        console.print(f"  {line}")
    return {"repo": repo.path, "ref": results["v2"]["ref"], "v1": v1, "v2": v2,
            "added": [p.name for p in d.added], "removed": [p.name for p in d.removed],
            "upgraded": [a.name for a, _ in d.upgraded]}
