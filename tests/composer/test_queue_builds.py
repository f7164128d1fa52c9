"""Real composes through the service: a worker process on another state directory sharing a
PostgreSQL queue, restarts (crash and clean stop), two workers at once, cancel.

Builds use the ``test`` profile and the offline apt repository (real .debs, real mmdebstrap,
real OSTree commits); the tree cache is shared by these tests, so only the first build of a
package set runs mmdebstrap."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.composer.conftest import (
    Server,
    blueprint,
    push,
    start_compose,
    status_of,
    wait_for,
    wait_state,
)

REF = "debian/12/x86_64/edge"


def _check_tar(tar_path: Path, dest: Path, commit: str) -> dict[str, Any]:
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        tar.extractall(dest)
    assert "compose.json" in names and "repo/config" in names
    meta = json.loads((dest / "compose.json").read_text())
    assert meta["ostree-commit"] == commit and meta["ref"] == REF
    rev = subprocess.run(["ostree", f"--repo={dest / 'repo'}", "rev-parse", REF],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert rev == commit
    subprocess.run(["ostree", f"--repo={dest / 'repo'}", "fsck", "-q"], check=True,
                   capture_output=True)
    return meta


def test_compose_started_over_the_api_is_built_by_a_postgresql_worker_elsewhere(
        servers: Callable[..., Server], postgres: str, tmp_path: Path) -> None:
    """The server (no workers of its own) and a ``composer worker`` process with another
    state directory share a PostgreSQL queue; composer-cli's ``start --wait`` follows the
    compose while the test watches its log and progress stream in; the image downloads from
    the server (the artifact travelled through the database) and holds repo/ + compose.json."""
    srv = servers("pgsrv", workers=0, db=postgres).start()
    api = srv.client()
    push(api, blueprint("gateway", "1.0.0"))
    cli = subprocess.Popen(   # composer-cli's start --wait, polled by the CLI meanwhile
        [sys.executable, "-m", "atomicedge.cli.main", "composer", "-s", str(srv.socket),
         "compose", "start", "gateway", "edge-commit", "--wait", "--timeout", "10m",
         "--poll", "1s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert cli.stdout is not None
    first = cli.stdout.readline()
    assert first.startswith("Compose ") and first.endswith(" added to the queue\n"), first
    build = first.split()[1]
    assert status_of(api, build)["queue_status"] == "WAITING"   # no worker yet
    worker = servers("pgworker", workers=1, db=postgres, state=tmp_path / "elsewhere",
                     mode="worker").start()
    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        entry = status_of(api, build)
        if entry["queue_status"] == "RUNNING":
            seen.append({**entry, "log": api.text(f"compose/log/{build}")})
        return entry["queue_status"] in ("FINISHED", "FAILED")

    wait_for(finished, 400, "the compose to finish")
    info = api.get(f"compose/info/{build}")
    log = api.text(f"compose/log/{build}")
    assert info["queue_status"] == "FINISHED", log
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0 and out == f"{build} FINISHED\n", (out, err)
    assert seen, "the compose was never seen RUNNING"
    assert any(s["progress"]["total"] > 0 and s["log"].strip() for s in seen), seen[-1]
    assert "-->" in "".join(s["log"] for s in seen)       # steps streamed while running
    assert ":remote0 building gateway 1.0.0" in log and f"commit {info['commit']} on {REF}" in log
    assert not (srv.state / "artifacts" / build).exists()   # built and stored elsewhere
    size = api.download(f"compose/image/{build}", tmp_path / "commit.tar")
    assert size == (tmp_path / "commit.tar").stat().st_size > 0
    meta = _check_tar(tmp_path / "commit.tar", tmp_path / "x", info["commit"])
    assert meta["ostree-version"] == "1.0.0"
    api.download(f"compose/results/{build}", tmp_path / "results.tar")
    with tarfile.open(tmp_path / "results.tar") as tar:
        assert {f"{build}-commit.tar", f"{build}.json", "logs/osbuild.log"} <= \
            set(tar.getnames())
    assert worker.stop() == 0


def _db(srv: Server) -> sqlite3.Connection:
    return sqlite3.connect(srv.state / "composer.db", timeout=30)


def test_server_killed_mid_queue_loses_nothing_then_two_workers_build_both_at_once(
        servers: Callable[..., Server], tmp_path: Path) -> None:
    srv = servers(workers=1).start()
    api = srv.client()
    push(api, blueprint("restart", "1.0.0"))
    first, second = start_compose(api, "restart"), start_compose(api, "restart")
    wait_state(api, first, ("RUNNING",), 60)
    assert status_of(api, second)["queue_status"] == "WAITING"
    with _db(srv) as db:
        pid = wait_for(lambda: db.execute("SELECT build_pid FROM composes WHERE id = ?",
                                          (first,)).fetchone()[0], 60, "a build process")
    srv.stop(signal.SIGKILL)                  # a crash, not a clean stop
    wait_for(lambda: not _group_members(pid), 60, "the orphaned build to stop")
    again = servers("again", workers=2, state=srv.state).start()
    api = again.client()
    assert status_of(api, first)["queue_status"] in ("WAITING", "RUNNING")
    wait_for(lambda: all(status_of(api, b)["queue_status"] == "RUNNING"
                         for b in (first, second)), 120, "both composes RUNNING at once")
    done = [wait_state(api, b, ("FINISHED", "FAILED"), 300) for b in (first, second)]
    assert [d["queue_status"] for d in done] == ["FINISHED", "FINISHED"], \
        api.text(f"compose/log/{first}")
    assert max(d["job_started"] for d in done) < min(d["job_finished"] for d in done)
    assert "re-queued" in api.text(f"compose/log/{first}")
    assert len({_builder(api.text(f"compose/log/{b}")) for b in (first, second)}) == 2
    info = api.get(f"compose/info/{first}")          # a local worker's artifact: a file
    assert (again.state / "artifacts" / first / "commit.tar").is_file()
    api.download(f"compose/image/{first}", tmp_path / "first.tar")
    _check_tar(tmp_path / "first.tar", tmp_path / "first", info["commit"])


def test_server_stopped_cleanly_hands_its_running_build_back(
        servers: Callable[..., Server]) -> None:
    srv = servers(workers=1).start()
    api = srv.client()
    push(api, blueprint("handback", "1.0.0"))
    build = start_compose(api, "handback")
    wait_state(api, build, ("RUNNING",), 60)
    with _db(srv) as db:
        pid = wait_for(lambda: db.execute("SELECT build_pid FROM composes WHERE id = ?",
                                          (build,)).fetchone()[0], 60, "a build process")
    assert srv.stop(signal.SIGTERM) == 0
    assert not _group_members(pid)            # the build did not outlive the server
    with _db(srv) as db:
        state, worker = db.execute("SELECT state, worker FROM composes WHERE id = ?",
                                   (build,)).fetchone()
        lines = [r[0] for r in db.execute("SELECT line FROM compose_log WHERE id = ?",
                                          (build,))]
    assert (state, worker) == ("WAITING", None)
    assert "re-queued: worker stopped before the build finished" in lines
    assert not (srv.state / "jobs" / build).exists()


def _builder(log: str) -> str:
    """The worker id of the last ``worker ID building ...`` line of a compose log."""
    return [ln for ln in log.splitlines() if ln.startswith("worker ")][-1].split()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _group_members(pgid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def test_cancel_stops_a_running_build(servers: Callable[..., Server],
                                      composer_cache: Path) -> None:
    srv = servers(workers=1).start()
    api = srv.client()
    push(api, blueprint("cancelme", "1.0.0"))
    build = start_compose(api, "cancelme")
    wait_for(lambda: (s := status_of(api, build))["queue_status"] == "RUNNING"
             and s["progress"]["message"] == "commit", 180, "the build committing")
    with _db(srv) as db:
        pid = db.execute("SELECT build_pid FROM composes WHERE id = ?", (build,)).fetchone()[0]
    assert _group_members(pid), "the build's process group is not running"
    assert api.call("DELETE", f"/api/v1/compose/cancel/{build}")["status"] is True
    assert status_of(api, build)["queue_status"] == "FAILED"
    wait_for(lambda: not _group_members(pid), 60, "the build and mmdebstrap to stop")
    assert not list((composer_cache / "compose" / "trees").glob(f"*.tmp-{pid}"))
    mounts = Path("/proc/mounts").read_text()
    assert str(composer_cache) not in mounts and str(srv.state) not in mounts
    wait_for(lambda: not (srv.state / "jobs" / build).exists(), 60, "the job dir removed")
    log = api.text(f"compose/log/{build}")
    assert "canceled" in log
    assert status_of(api, build)["queue_status"] == "FAILED"   # the worker did not overwrite
