"""Workers: claim a compose from the queue, run it in a build process, stream log + progress.

A worker is a thread (the server runs ``--workers N`` of them; ``atomicedge composer worker``
runs them in a process of its own, on this machine or another one sharing a PostgreSQL
queue). For each job it starts :mod:`atomicedge.composer.buildjob` in a new session, turns its
events into log lines and progress in the database, refreshes the heartbeat, and watches the
job's state: when the job is cancelled (or taken away after a timeout) it sends SIGTERM, then
SIGKILL to the whole process group if the build does not stop in time.

Artifacts: a worker sharing the server's state directory leaves the tar in
``STATE/artifacts/ID/``; a remote worker (``artifacts="db"``) stores it in the database in
chunks, which the server streams to clients.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from atomicedge.compose.mmdebstrap import remove_tree
from atomicedge.composer.queue import Job, Queue, worker_id

log = logging.getLogger("atomicedge.composer")
ARTIFACT_NAMES = {"edge-commit": "commit.tar", "edge-container": "container.tar"}
STOP_GRACE = 30.0


class Worker(threading.Thread):
    def __init__(self, queue: Queue, state: Path, *, name: str, cache_root: Path,
                 artifacts: str = "local", wakeup: threading.Event | None = None,
                 poll: float = 0.5) -> None:
        super().__init__(name=f"composer-{name}", daemon=True)
        self.queue = queue
        self.state = state
        self.cache_root = cache_root
        self.artifacts = artifacts
        self.wakeup = wakeup or threading.Event()
        self.poll = poll
        self.worker = worker_id(name)
        self.stopping = threading.Event()
        self.current: str | None = None

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.queue.claim(self.worker)
            except Exception:  # a database hiccup must not kill the worker
                log.exception("claim failed")
                job = None
            if job is None:
                self.wakeup.wait(self.poll)
                self.wakeup.clear()
                continue
            self.current = job.id
            try:
                self.run_job(job)
            except Exception as exc:  # the job fails, the worker goes on
                log.exception("job %s", job.id)
                self.queue.finish(job.id, self.worker, success=False, result={},
                                  artifact=None, message=f"worker error: {exc}")
            finally:
                self.current = None

    # ---- one job ---------------------------------------------------------------------
    def _spec(self, job: Job, work: Path, artifact: Path) -> dict[str, Any]:
        return {**job.args, "id": job.id, "compose_type": job.compose_type,
                "work": str(work), "artifact": str(artifact),
                "cache_root": str(self.cache_root)}

    def run_job(self, job: Job) -> None:
        work = self.state / "jobs" / job.id
        remove_tree(work)
        work.mkdir(parents=True)
        name = ARTIFACT_NAMES.get(job.compose_type, f"{job.compose_type}.tar")
        final = self.state / "artifacts" / job.id / name
        artifact = work / name
        self.queue.log(job.id, f"worker {self.worker} building {job.blueprint_name} "
                               f"{job.version} ({job.compose_type})")
        env = {**os.environ, "ATOMICEDGE_WORKER_PID": str(os.getpid())}
        with open(work / "stderr.log", "wb") as errfile:
            proc = subprocess.Popen(
                [sys.executable, "-m", "atomicedge.composer.buildjob"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=errfile, start_new_session=True, env=env,
                cwd=work)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(self._spec(job, work, artifact)).encode())
        proc.stdin.close()
        self.queue.heartbeat(job.id, self.worker, build_pid=proc.pid, message="running")
        outcome = self._supervise(job, proc)
        try:
            self._conclude(job, proc, outcome, artifact, final)
        finally:
            remove_tree(work)

    def _supervise(self, job: Job, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        """Relay events until the build exits; stop it when the job is no longer ours."""
        assert proc.stdout is not None
        outcome: dict[str, Any] = {}
        buf = b""
        last_check = 0.0
        killed_at: float | None = None
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    outcome = self._event(job, line, outcome)
            now = time.monotonic()
            if killed_at is None and now - last_check >= 0.5:
                last_check = now
                reason = self._should_stop(job)
                if reason:
                    outcome["stopped"] = reason
                    killed_at = now
                    _signal(proc, signal.SIGTERM, group=False)
            if killed_at is not None and now - killed_at > STOP_GRACE:
                _signal(proc, signal.SIGKILL, group=True)
        proc.wait()
        _signal(proc, signal.SIGKILL, group=True)   # nothing of the build outlives it
        return outcome

    def _should_stop(self, job: Job) -> str | None:
        if self.stopping.is_set():
            return "worker stopping"
        if not self.queue.heartbeat(job.id, self.worker):
            return "job canceled or taken away"
        return None

    def _event(self, job: Job, line: bytes, outcome: dict[str, Any]) -> dict[str, Any]:
        try:
            ev = json.loads(line)
        except ValueError:
            return outcome
        kind = ev.pop("event", "")
        if kind == "log":
            self.queue.log(job.id, str(ev.get("text", "")))
        elif kind == "step":
            self.queue.heartbeat(job.id, self.worker, done=int(ev["done"]),
                                 total=int(ev["total"]), message=str(ev["name"]))
        elif kind in ("result", "error"):
            outcome = {**outcome, "kind": kind, **ev}
        return outcome

    def _conclude(self, job: Job, proc: subprocess.Popen[bytes], outcome: dict[str, Any],
                  artifact: Path, final: Path) -> None:
        stopped = outcome.get("stopped")
        if stopped == "worker stopping":
            self.queue.release(job.id, self.worker, "worker stopped before the build finished")
            return
        if stopped:
            self.queue.log(job.id, f"build stopped: {stopped}")
            return
        if outcome.get("kind") == "result" and artifact.exists():
            where = self._store_artifact(job, artifact, final)
            result = {k: v for k, v in outcome.items() if k not in ("kind", "stopped")}
            self.queue.log(job.id, f"commit {result.get('commit')} on {result.get('ref')}")
            self.queue.finish(job.id, self.worker, success=True, result=result,
                              artifact=where, message="finished")
            return
        msg = outcome.get("msg") or f"build process exited with status {proc.returncode}"
        tail = (artifact.parent / "stderr.log")
        if tail.exists() and not outcome.get("msg"):
            lines = tail.read_text(errors="replace").strip().splitlines()[-5:]
            msg += ": " + " | ".join(lines)
        self.queue.log(job.id, f"ERROR: {msg}")
        self.queue.finish(job.id, self.worker, success=False, result={"error": msg},
                          artifact=None, message=msg)

    def _store_artifact(self, job: Job, artifact: Path, final: Path) -> str:
        if self.artifacts == "db":
            self.queue.store_artifact_chunks(job.id, str(artifact))
            return f"db:{final.name}"
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(artifact), final)
        return f"file:{final}"


def _signal(proc: subprocess.Popen[bytes], sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_workers(queue: Queue, state: Path, count: int, *, cache_root: Path,
                  artifacts: str = "local", wakeup: threading.Event | None = None,
                  prefix: str = "w") -> list[Worker]:
    workers = [Worker(queue, state, name=f"{prefix}{i}", cache_root=cache_root,
                      artifacts=artifacts, wakeup=wakeup) for i in range(count)]
    for w in workers:
        w.start()
    return workers


def stop_workers(workers: list[Worker], timeout: float = STOP_GRACE + 10) -> None:
    for w in workers:
        w.stop()
    deadline = time.monotonic() + timeout
    for w in workers:
        w.join(max(0.1, deadline - time.monotonic()))

