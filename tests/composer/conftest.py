"""Fixtures of the composer tests: a real ``atomicedge composer serve`` process (unix socket,
SQLite or PostgreSQL), the offline apt repository, and Debian's PostgreSQL started from a
temporary data directory as the ``postgres`` user (unix socket only, no TCP)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicedge.composer.client import Client
from tests.compose import offline_repo

BLUEPRINT = """
name = "{name}"
description = "composer test image"
version = "{version}"

[[packages]]
name = "edge-hello"
{extra}
[customizations]
hostname = "gw-01"

[customizations.kernel]
name = "edge-test-kernel"

[[customizations.user]]
name = "admin"
password = "s3cret"
groups = ["sudo"]
"""


def blueprint(name: str = "gateway", version: str = "1.0.0", extra: str = "") -> str:
    return BLUEPRINT.format(name=name, version=version, extra=extra)


def wait_for(cond: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy (no sleep-as-sync)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def composer_repo(composer_cache: Path) -> Path:
    """The offline apt repository, kept beside the tree cache: its Release file is part of
    the tree cache key, so a stable repository keeps later sessions' builds warm."""
    repo = composer_cache / "aptrepo" / "repo"
    if not (repo / "Release").exists():
        shutil.rmtree(repo.parent, ignore_errors=True)
        offline_repo.build_repo(repo)
    return repo


@pytest.fixture(scope="session")
def composer_cache() -> Path:
    """A tree cache shared by the composer tests' servers (content-addressed, so reuse is
    safe); the first compose of the session may be cold, later ones of the same package set
    are warm, which keeps the queue tests at seconds per build."""
    root = Path(os.environ.get("ATOMICEDGE_TEST_CACHE", "/var/tmp/atomicedge-cache")) \
        / "composer-tests"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)   # apt then fetches the file:// repo as root, not as _apt
    return root


class Server:
    """One ``atomicedge composer serve`` (or ``worker``) process; stopped by PID."""

    def __init__(self, work: Path, repo: Path, cache: Path, *, workers: int = 1,
                 db: str | None = None, state: Path | None = None,
                 extra: tuple[str, ...] = (), mode: str = "serve") -> None:
        self.work = work
        self.socket = work / "api.sock"
        self.state = state or work / "state"
        self.repo, self.cache, self.workers, self.db = repo, cache, workers, db
        self.extra, self.mode = extra, mode
        self.proc: subprocess.Popen[str] | None = None
        self.log = work / f"{mode}.log"

    def start(self) -> Server:
        argv = [sys.executable, "-m", "atomicedge.cli.main", "composer", self.mode,
                "--state", str(self.state), "--offline-repo", str(self.repo),
                "--profile", "test", "--workers", str(self.workers), "--job-timeout", "30",
                *self.extra]
        if self.mode == "serve":
            argv += ["--socket", str(self.socket)]
        if self.db:
            argv += ["--db", self.db]
        env = dict(os.environ, ATOMICEDGE_CACHE=str(self.cache))
        with open(self.log, "a") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, text=True,
                                         env=env, start_new_session=True)
        if self.mode == "serve":
            wait_for(self._ready, 60, f"composer socket {self.socket}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
        if not self.socket.exists():
            return False
        try:
            return self.client().call("GET", "/api/status")["api"] == "1"
        except Exception:
            return False

    def client(self) -> Client:
        return Client(socket=str(self.socket), timeout=60)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def kill_group(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def servers(tmp_path: Path, composer_repo: Path,
            composer_cache: Path) -> Iterator[Callable[..., Server]]:
    """Factory of servers; every one is stopped (and its process group killed) at the end."""
    made: list[Server] = []

    def make(name: str = "srv", **kw: Any) -> Server:
        work = tmp_path / name
        work.mkdir(exist_ok=True)
        srv = Server(work, composer_repo, composer_cache, **kw)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()
        srv.kill_group()


def push(client: Client, text: str) -> None:
    client.call("POST", "/api/v1/blueprints/new", text.encode(), "text/x-toml")


def start_compose(client: Client, name: str = "gateway", test: str = "",
                  ostree: dict[str, str] | None = None) -> str:
    import json
    req: dict[str, Any] = {"blueprint_name": name, "compose_type": "edge-commit",
                           "branch": "master"}
    if ostree is not None:
        req["ostree"] = ostree
    query = f"?test={test}" if test else ""
    return str(client.call("POST", f"/api/v1/compose{query}", json.dumps(req).encode(),
                           "application/json")["build_id"])


def status_of(client: Client, build_id: str) -> dict[str, Any]:
    return dict(client.get(f"compose/status/{build_id}")["uuids"][0])


def wait_state(client: Client, build_id: str, states: tuple[str, ...],
               timeout: float = 180) -> dict[str, Any]:
    return dict(wait_for(lambda: (s := status_of(client, build_id))["queue_status"] in states
                         and s, timeout, f"{build_id} in {states}"))


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """Debian's PostgreSQL from a temporary data dir, run as ``postgres``, socket only."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    base = Path(tempfile.mkdtemp(prefix="composer-pg-", dir="/tmp"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(base, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")

    def as_pg(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, text=True, timeout=120)

    as_pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    as_pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w", "-o",
          f"-k {sock} -c listen_addresses=''", "start")
    try:
        as_pg(str(bindir / "createdb"), "-h", str(sock), "composer")
        yield f"postgresql://postgres@/composer?host={sock}"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(base, ignore_errors=True)
