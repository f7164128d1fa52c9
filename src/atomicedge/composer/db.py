"""The composer's database: SQLite by default, PostgreSQL for workers on other machines.

One small seam with two backends behind the same four calls (``query``, ``execute``,
``transaction``, ``close``). SQL is written once with ``?`` placeholders; the PostgreSQL backend
(pg8000, pure Python: this runs on the build host, not on devices) rewrites them to its named
form. Each thread gets its own connection (the API loop, every worker thread, the reaper).

Why SQLite in WAL mode with ``BEGIN IMMEDIATE``: every state change is one short transaction,
readers never block the writer, and a server killed mid-write leaves the last committed state —
nothing half-written, which is what "restart-safe" rests on.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from atomicedge.errors import UsageError

Row = tuple[Any, ...]

SCHEMA = """
CREATE TABLE IF NOT EXISTS blueprints (
    name TEXT PRIMARY KEY, committed TEXT, workspace TEXT);
CREATE TABLE IF NOT EXISTS changes (
    name TEXT NOT NULL, seq INTEGER NOT NULL, commit_id TEXT NOT NULL, message TEXT NOT NULL,
    revision INTEGER, timestamp TEXT NOT NULL, blueprint TEXT NOT NULL,
    PRIMARY KEY (name, seq));
CREATE TABLE IF NOT EXISTS composes (
    id TEXT PRIMARY KEY, blueprint_name TEXT NOT NULL, version TEXT NOT NULL,
    compose_type TEXT NOT NULL, image_size BIGINT NOT NULL, state TEXT NOT NULL,
    queued DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION, finished DOUBLE PRECISION,
    args TEXT NOT NULL, packages TEXT NOT NULL, worker TEXT, heartbeat DOUBLE PRECISION,
    retries INTEGER NOT NULL DEFAULT 0, canceled INTEGER NOT NULL DEFAULT 0,
    progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '', result TEXT, artifact TEXT, build_pid INTEGER);
CREATE TABLE IF NOT EXISTS compose_log (
    id TEXT NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL, PRIMARY KEY (id, seq));
CREATE TABLE IF NOT EXISTS artifact_chunks (
    id TEXT NOT NULL, seq INTEGER NOT NULL, data {blob} NOT NULL, PRIMARY KEY (id, seq));
"""


class Database:
    """Thread-local connections to one database; ``kind`` is ``sqlite`` or ``postgresql``."""

    kind = "sqlite"

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    # -- backend hooks ---------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    # -- public ----------------------------------------------------------------------
    def conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(self.conn(), sql, params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(self.conn(), sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One atomic unit; nested use is not supported (and not needed)."""
        conn = self.conn()
        self._begin(conn)
        try:
            yield self
        except BaseException:
            self._run(conn, "ROLLBACK", ())
            raise
        self._run(conn, "COMMIT", ())

    def init_schema(self) -> None:
        """Create the tables (a server and a worker starting together may race: retried)."""
        blob = "BLOB" if self.kind == "sqlite" else "BYTEA"
        for stmt in SCHEMA.format(blob=blob).split(";"):
            if not stmt.strip():
                continue
            for attempt in range(3):
                try:
                    self.execute(stmt)
                    break
                except Exception:  # both drivers' "already exists" races
                    if attempt == 2:
                        raise
                    time.sleep(0.2)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except Exception:  # closing a dead connection is fine
                    pass
            self._all.clear()
        self._local = threading.local()


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _run(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
        return list(conn.execute(sql, tuple(params)).fetchall())

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")


_QMARK = re.compile(r"\?")


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.params = parse_pg_url(url)

    def _connect(self) -> Any:
        import pg8000.native
        try:
            return pg8000.native.Connection(**self.params)
        except Exception as exc:  # pg8000 raises several unrelated types
            raise UsageError(f"--db: cannot connect to PostgreSQL: {exc}",
                             "check the URL, that the server runs, and the user's rights") \
                from None

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]:
        count = iter(range(len(params)))
        text = _QMARK.sub(lambda _m: f":p{next(count)}", sql)
        rows = conn.run(text, **{f"p{i}": v for i, v in enumerate(params)})
        return [tuple(r) for r in rows or []]

    def _begin(self, conn: Any) -> None:
        conn.run("START TRANSACTION ISOLATION LEVEL SERIALIZABLE")


def parse_pg_url(url: str) -> dict[str, Any]:
    """``postgresql://user[:pw]@host[:port]/db`` or ``...@/db?host=/run/sockdir`` (libpq style)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    params: dict[str, Any] = {"user": urllib.parse.unquote(parts.username or "postgres"),
                              "database": (parts.path or "/").lstrip("/") or "postgres"}
    if parts.password:
        params["password"] = urllib.parse.unquote(parts.password)
    port = parts.port or 5432
    sockdir = (query.get("host") or [""])[0]
    if sockdir.startswith("/"):
        params["unix_sock"] = f"{sockdir}/.s.PGSQL.{port}"
    else:
        params["host"] = parts.hostname or "127.0.0.1"
        params["port"] = port
    return params


def open_database(url: str | None, state: Path) -> Database:
    """``None`` -> SQLite in the state dir; ``sqlite:///PATH``; ``postgresql://...``."""
    if not url:
        db: Database = SqliteDatabase(state / "composer.db")
    elif url.startswith(("postgresql://", "postgres://")):
        db = PostgresDatabase(url)
    elif url.startswith("sqlite:///"):
        db = SqliteDatabase(Path(url[len("sqlite://"):]))
    else:
        raise UsageError(f"--db {url!r} is not a database URL",
                         "use sqlite:///PATH or postgresql://USER@HOST/DB")
    db.init_schema()
    return db
