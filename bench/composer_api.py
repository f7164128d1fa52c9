"""Benchmark of the composer service's API (issue 12): status polls per second with 50 clients.

A real ``atomicedge composer serve`` (unix socket, SQLite, no workers) holds 20 composes
(test mode: finished at once) and 10 blueprints; 50 client threads, each with its own
connection per request as composer-cli makes them, poll ``GET /api/v1/compose/status/*`` for
a fixed time. Prints polls per second and the latency p50/p99. Uses the machine's Debian
sources for the depsolve of the test composes (``--profile test``: minbase only).

Run alone: .venv/bin/python bench/composer_api.py [--clients 50] [--seconds 10]
(``bench/compose.py`` runs it too).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from atomicedge.composer.client import Client


def _serve(work: Path) -> tuple[subprocess.Popen[bytes], Client]:
    sock = work / "api.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomicedge.cli.main", "composer", "serve", "--socket", str(sock),
         "--state", str(work / "state"), "--workers", "0", "--profile", "test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = Client(socket=str(sock), timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if sock.exists() and client.call("GET", "/api/status")["api"] == "1":
                return proc, client
        except Exception:   # not listening yet
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("composer did not start")


def _populate(client: Client, blueprints: int = 10, composes: int = 20) -> None:
    for n in range(blueprints):
        text = f'name = "bench-{n}"\nversion = "1.0.{n}"\n'
        client.call("POST", "/api/v1/blueprints/new", text.encode(), "text/x-toml")
    req = json.dumps({"blueprint_name": "bench-0", "compose_type": "edge-commit"}).encode()
    for _ in range(composes):
        client.call("POST", "/api/v1/compose?test=2", req, "application/json")


def status_polls(clients: int = 50, seconds: float = 10.0) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-composer-", dir="/var/tmp"))
    proc, client = _serve(work)
    try:
        _populate(client)
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop = time.monotonic() + seconds
        barrier = threading.Barrier(clients)

        def poll() -> None:
            c = Client(socket=client.socket, timeout=60)
            mine: list[float] = []
            barrier.wait()
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                reply = c.request("GET", "/api/v1/compose/status/*")
                mine.append(time.perf_counter() - t0)
                if reply.status != 200 or len(json.loads(reply.body)["uuids"]) != 20:
                    with lock:
                        errors[0] += 1
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=poll) for _ in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    q = statistics.quantiles(latencies, n=100)
    return {"polls": len(latencies), "seconds": wall, "per_second": len(latencies) / wall,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "errors": errors[0],
            "clients": clients, "cores": os.cpu_count() or 0}


def report(r: dict[str, float]) -> str:
    return (f"API: status polls per second, {r['clients']:.0f} clients on {r['cores']:.0f} "
            f"cores: {r['per_second']:7.0f}/s   (p50 {r['p50_ms']:.1f} ms, p99 "
            f"{r['p99_ms']:.1f} ms, {r['polls']:.0f} polls, {r['errors']:.0f} errors)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(report(status_polls(args.clients, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
