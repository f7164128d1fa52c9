"""The compose job queue: WAITING -> RUNNING -> FINISHED | FAILED, in the database.

A worker claims the oldest WAITING job in one statement (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, a write lock on SQLite), so two workers never take the same job. While it builds,
the worker refreshes the job's heartbeat and streams its log lines and progress into the
database; it finishes the job only while it still owns it (``state = RUNNING AND worker = me``),
so a job that was cancelled or re-queued meanwhile is never overwritten.

Restart safety (what osbuild-composer's job queue does with heartbeats): a RUNNING job whose
worker is gone — a process of this host that no longer exists, or a heartbeat older than the
timeout — goes back to WAITING (up to ``MAX_RETRIES`` times, then FAILED with the reason), so a
compose is never lost and never silently stuck. Cancel makes a job FAILED at once, as in
osbuild-composer; the worker sees it and stops the build.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from atomicedge.composer.db import Database

WAITING, RUNNING, FINISHED, FAILED = "WAITING", "RUNNING", "FINISHED", "FAILED"
MAX_RETRIES = 2
CHUNK = 4 * 1024 * 1024

COLUMNS = ("id, blueprint_name, version, compose_type, image_size, state, queued, started, "
           "finished, args, packages, worker, heartbeat, retries, canceled, progress_done, "
           "progress_total, message, result, artifact, build_pid")


@dataclass
class Job:
    id: str
    blueprint_name: str
    version: str
    compose_type: str
    image_size: int
    state: str
    queued: float
    started: float | None
    finished: float | None
    args: dict[str, Any]
    packages: list[dict[str, Any]]
    worker: str | None = None
    heartbeat: float | None = None
    retries: int = 0
    canceled: bool = False
    progress_done: int = 0
    progress_total: int = 0
    message: str = ""
    result: dict[str, Any] | None = None
    artifact: str | None = None
    build_pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        vals = list(row)
        vals[9] = json.loads(vals[9])
        vals[10] = json.loads(vals[10])
        vals[14] = bool(vals[14])
        vals[18] = json.loads(vals[18]) if vals[18] else None
        return cls(*vals)


def worker_id(name: str = "") -> str:
    """``host:pid:name`` — enough to tell a dead local worker from a live remote one."""
    return f"{socket.gethostname()}:{os.getpid()}:{name}"


def _worker_gone(worker: str | None) -> bool:
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Queue:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- creation and reads --------------------------------------------------------
    def enqueue(self, *, blueprint: dict[str, Any], compose_type: str, size: int,
                args: dict[str, Any], packages: list[dict[str, Any]],
                test_state: str | None = None) -> str:
        """A new WAITING job (or, for the API's test modes, one already FAILED/FINISHED)."""
        job_id = str(uuid.uuid4())
        now = time.time()
        state = test_state or WAITING
        done = now if test_state else None
        self.db.execute(
            "INSERT INTO composes (id, blueprint_name, version, compose_type, image_size, state,"
            " queued, started, finished, args, packages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, blueprint["name"], blueprint.get("version", ""), compose_type, size, state,
             now, done, done, json.dumps(args), json.dumps(packages)))
        if test_state:
            self.log(job_id, f"test mode: compose created {test_state}, nothing was built")
        return job_id

    def get(self, job_id: str) -> Job | None:
        row = self.db.one(f"SELECT {COLUMNS} FROM composes WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    def all(self) -> list[Job]:
        """Every compose, without its request and package list (what listings show)."""
        light = COLUMNS.replace("args, packages", "'{}', '[]'")
        return [Job.from_row(r) for r in
                self.db.query(f"SELECT {light} FROM composes ORDER BY id")]

    def state(self, job_id: str) -> tuple[str, bool, str | None] | None:
        row = self.db.one("SELECT state, canceled, worker FROM composes WHERE id = ?", (job_id,))
        return (row[0], bool(row[1]), row[2]) if row else None

    # ---- worker side -----------------------------------------------------------------
    def claim(self, worker: str) -> Job | None:
        lock = " FOR UPDATE SKIP LOCKED" if self.db.kind == "postgresql" else ""
        now = time.time()
        rows = self.db.execute(
            "UPDATE composes SET state = 'RUNNING', worker = ?, started = ?, heartbeat = ?, "
            "progress_done = 0, message = 'starting' WHERE id = (SELECT id FROM composes "
            f"WHERE state = 'WAITING' ORDER BY queued, id LIMIT 1{lock}) AND state = 'WAITING' "
            "RETURNING id", (worker, now, now))
        return self.get(rows[0][0]) if rows else None

    def heartbeat(self, job_id: str, worker: str, *, done: int | None = None,
                  total: int | None = None, message: str | None = None,
                  build_pid: int | None = None) -> bool:
        """Refresh the heartbeat (and progress); False when the job is no longer ours."""
        sets = ["heartbeat = ?"]
        params: list[Any] = [time.time()]
        for col, val in (("progress_done", done), ("progress_total", total),
                         ("message", message), ("build_pid", build_pid)):
            if val is not None:
                sets.append(f"{col} = ?")
                params.append(val)
        rows = self.db.execute(
            f"UPDATE composes SET {', '.join(sets)} WHERE id = ? AND state = 'RUNNING' "
            "AND worker = ? RETURNING id", (*params, job_id, worker))
        return bool(rows)

    def finish(self, job_id: str, worker: str, *, success: bool, result: dict[str, Any],
               artifact: str | None, message: str) -> bool:
        rows = self.db.execute(
            "UPDATE composes SET state = ?, finished = ?, result = ?, artifact = ?, message = ?,"
            " progress_done = CASE WHEN ? THEN progress_total ELSE progress_done END, "
            "build_pid = NULL WHERE id = ? AND state = 'RUNNING' AND worker = ? RETURNING id",
            (FINISHED if success else FAILED, time.time(), json.dumps(result), artifact,
             message, success, job_id, worker))
        return bool(rows)

    def release(self, job_id: str, worker: str, reason: str) -> None:
        """Put our RUNNING job back to WAITING (the worker is stopping), without a retry."""
        rows = self.db.execute(
            "UPDATE composes SET state = 'WAITING', worker = NULL, started = NULL, "
            "heartbeat = NULL, build_pid = NULL, message = ? WHERE id = ? AND state = 'RUNNING'"
            " AND worker = ? RETURNING id", (reason, job_id, worker))
        if rows:
            self.log(job_id, f"re-queued: {reason}")

    # ---- logs and artifacts ------------------------------------------------------------
    def log(self, job_id: str, line: str) -> None:
        """Append one log line (its number assigned by the database; retried on a race)."""
        for attempt in range(5):
            try:
                self.db.execute(
                    "INSERT INTO compose_log (id, seq, line) SELECT ?, COALESCE(MAX(seq), -1) "
                    "+ 1, ? FROM compose_log WHERE id = ?", (job_id, line, job_id))
                return
            except Exception:  # both drivers' integrity errors
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def log_lines(self, job_id: str, after: int = -1) -> list[tuple[int, str]]:
        rows = self.db.query("SELECT seq, line FROM compose_log WHERE id = ? AND seq > ? "
                             "ORDER BY seq", (job_id, after))
        return [(int(r[0]), r[1]) for r in rows]

    def store_artifact_chunks(self, job_id: str, path: str) -> None:
        with open(path, "rb") as fh:
            seq = 0
            while chunk := fh.read(CHUNK):
                self.db.execute("INSERT INTO artifact_chunks (id, seq, data) VALUES (?, ?, ?)",
                                (job_id, seq, chunk))
                seq += 1

    def artifact_chunk_count(self, job_id: str) -> tuple[int, int]:
        row = self.db.one("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM "
                          "artifact_chunks WHERE id = ?", (job_id,))
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def artifact_chunk(self, job_id: str, seq: int) -> bytes:
        row = self.db.one("SELECT data FROM artifact_chunks WHERE id = ? AND seq = ?",
                          (job_id, seq))
        return bytes(row[0]) if row else b""

    # ---- API side ----------------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        rows = self.db.execute(
            "UPDATE composes SET state = 'FAILED', canceled = 1, finished = ?, "
            "message = 'canceled' WHERE id = ? AND state IN ('WAITING', 'RUNNING') RETURNING id",
            (time.time(), job_id))
        if rows:
            self.log(job_id, "canceled by request")
        return bool(rows)

    def delete(self, job_id: str) -> bool:
        with self.db.transaction() as db:
            rows = db.execute("DELETE FROM composes WHERE id = ? AND state IN "
                              "('FINISHED', 'FAILED') RETURNING id", (job_id,))
            if rows:
                db.execute("DELETE FROM compose_log WHERE id = ?", (job_id,))
                db.execute("DELETE FROM artifact_chunks WHERE id = ?", (job_id,))
        return bool(rows)

    def requeue_stale(self, timeout: float) -> list[str]:
        """Jobs whose worker died or went silent: back to WAITING, or FAILED after retries."""
        moved = []
        now = time.time()
        for job_id, worker, beat, retries in self.db.query(
                "SELECT id, worker, heartbeat, retries FROM composes WHERE state = 'RUNNING'"):
            if not (_worker_gone(worker) or (beat or 0) < now - timeout):
                continue
            if retries >= MAX_RETRIES:
                reason = (f"worker {worker} stopped responding; failed after "
                          f"{retries + 1} attempts")
                rows = self.db.execute(
                    "UPDATE composes SET state = 'FAILED', finished = ?, message = ?, "
                    "build_pid = NULL WHERE id = ? AND state = 'RUNNING' AND worker = ? "
                    "RETURNING id", (now, reason, job_id, worker))
            else:
                reason = f"worker {worker} stopped responding; re-queued"
                rows = self.db.execute(
                    "UPDATE composes SET state = 'WAITING', worker = NULL, started = NULL, "
                    "heartbeat = NULL, build_pid = NULL, retries = retries + 1, message = ? "
                    "WHERE id = ? AND state = 'RUNNING' AND worker = ? RETURNING id",
                    (reason, job_id, worker))
            if rows:
                self.log(job_id, reason)
                moved.append(job_id)
        return moved
