"""Blueprint store with osbuild-composer's history semantics: commits, workspace, tags, undo.

* push: a new change (random SHA-1-looking commit id, message ``Recipe NAME, version V saved.``,
  UTC timestamp), the workspace copy dropped, and the version auto-bumped exactly as
  osbuild-composer does: when the blueprint already exists and the pushed version (``0.0.0``
  when empty) equals the stored one, the patch level goes up; any other version is kept as
  given, even a lower one.
* workspace: a draft returned by ``info`` (``changed: true``) until it is pushed or deleted.
* tag: the newest change gets revision = previous highest + 1 (no-op when already tagged).
* undo: re-pushes the blueprint of an older change as a new change (the bump rule applies).
* delete: the committed and workspace copies go; the history stays.

Each operation is one database transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from atomicedge.composer import blueprints as bpmod
from atomicedge.composer.db import Database


class StoreError(Exception):
    """A refused store operation; ``error_id`` is the weldr error id."""

    def __init__(self, error_id: str, msg: str) -> None:
        super().__init__(msg)
        self.error_id = error_id
        self.msg = msg


@dataclass(frozen=True)
class Change:
    commit: str
    message: str
    revision: int | None
    timestamp: str
    blueprint: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "message": self.message, "revision": self.revision,
                "timestamp": self.timestamp}


def _commit_id() -> str:
    return hashlib.sha1(os.urandom(20)).hexdigest()


class BlueprintStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- reads -------------------------------------------------------------------
    def names(self) -> list[str]:
        rows = self.db.query("SELECT name FROM blueprints WHERE committed IS NOT NULL")
        return sorted(r[0] for r in rows)

    def get(self, name: str) -> tuple[dict[str, Any] | None, bool]:
        """(workspace copy if any else committed copy, whether it came from the workspace)."""
        row = self.db.one("SELECT committed, workspace FROM blueprints WHERE name = ?", (name,))
        if row is None:
            return None, False
        if row[1] is not None:
            return json.loads(row[1]), True
        return (json.loads(row[0]) if row[0] is not None else None), False

    def committed(self, name: str) -> dict[str, Any] | None:
        row = self.db.one("SELECT committed FROM blueprints WHERE name = ?", (name,))
        return json.loads(row[0]) if row and row[0] is not None else None

    def changes(self, name: str) -> list[Change] | None:
        """Oldest first; None when the blueprint never had a change."""
        rows = self.db.query("SELECT commit_id, message, revision, timestamp, blueprint "
                             "FROM changes WHERE name = ? ORDER BY seq", (name,))
        if not rows:
            return None
        return [Change(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def change(self, name: str, commit: str) -> Change:
        if not self.db.one("SELECT 1 FROM changes WHERE name = ?", (name,)):
            raise StoreError("UnknownCommit", "Unknown blueprint")
        row = self.db.one("SELECT commit_id, message, revision, timestamp, blueprint FROM "
                          "changes WHERE name = ? AND commit_id = ?", (name, commit))
        if row is None:
            raise StoreError("UnknownCommit", "Unknown commit")
        return Change(row[0], row[1], row[2], row[3], json.loads(row[4]))

    # ---- writes ------------------------------------------------------------------
    def push(self, bp: dict[str, Any], message: str | None = None) -> dict[str, Any]:
        """Commit ``bp`` (already initialized and validated); returns what was stored."""
        bp = dict(bp)
        name = bp["name"]
        with self.db.transaction() as db:
            row = db.one("SELECT committed FROM blueprints WHERE name = ?", (name,))
            old = json.loads(row[0]) if row and row[0] is not None else None
            if old is not None and bp.get("version") == old.get("version"):
                bumped = bpmod.bump(str(old.get("version")))
                if bumped:
                    bp["version"] = bumped
            text = json.dumps(bp)
            seq_row = db.one("SELECT COALESCE(MAX(seq), 0) FROM changes WHERE name = ?", (name,))
            seq = int(seq_row[0] if seq_row else 0) + 1
            msg = message or f"Recipe {name}, version {bp['version']} saved."
            db.execute("INSERT INTO changes (name, seq, commit_id, message, revision, timestamp,"
                       " blueprint) VALUES (?, ?, ?, ?, NULL, ?, ?)",
                       (name, seq, _commit_id(), msg,
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), text))
            if row is None:
                db.execute("INSERT INTO blueprints (name, committed, workspace) "
                           "VALUES (?, ?, NULL)", (name, text))
            else:
                db.execute("UPDATE blueprints SET committed = ?, workspace = NULL "
                           "WHERE name = ?", (text, name))
        return bp

    def push_workspace(self, bp: dict[str, Any]) -> None:
        text = json.dumps(bp)
        with self.db.transaction() as db:
            if db.one("SELECT 1 FROM blueprints WHERE name = ?", (bp["name"],)):
                db.execute("UPDATE blueprints SET workspace = ? WHERE name = ?",
                           (text, bp["name"]))
            else:
                db.execute("INSERT INTO blueprints (name, committed, workspace) "
                           "VALUES (?, NULL, ?)", (bp["name"], text))

    def delete(self, name: str) -> None:
        with self.db.transaction() as db:
            row = db.one("SELECT committed FROM blueprints WHERE name = ?", (name,))
            db.execute("UPDATE blueprints SET workspace = NULL WHERE name = ?", (name,))
            if row is None or row[0] is None:
                raise StoreError("BlueprintsError", f"Unknown blueprint: {name}")
            db.execute("DELETE FROM blueprints WHERE name = ?", (name,))

    def delete_workspace(self, name: str) -> None:
        with self.db.transaction() as db:
            row = db.one("SELECT committed, workspace FROM blueprints WHERE name = ?", (name,))
            if row is None or row[1] is None:
                raise StoreError("BlueprintsError", f"Unknown blueprint: {name}")
            if row[0] is None:
                db.execute("DELETE FROM blueprints WHERE name = ?", (name,))
            else:
                db.execute("UPDATE blueprints SET workspace = NULL WHERE name = ?", (name,))

    def tag(self, name: str) -> None:
        with self.db.transaction() as db:
            row = db.one("SELECT committed FROM blueprints WHERE name = ?", (name,))
            if row is None or row[0] is None:
                raise StoreError("BlueprintsError", "Unknown blueprint")
            rows = db.query("SELECT seq, revision FROM changes WHERE name = ? ORDER BY seq",
                            (name,))
            if not rows:
                raise StoreError("BlueprintsError", "No commits for blueprint")
            if rows[-1][1] is not None:
                return
            revision = max((r[1] for r in rows if r[1] is not None), default=0) + 1
            db.execute("UPDATE changes SET revision = ? WHERE name = ? AND seq = ?",
                       (revision, name, rows[-1][0]))

    def undo(self, name: str, commit: str) -> dict[str, Any]:
        change = self.change(name, commit)
        if not change.blueprint.get("name"):
            raise StoreError("BlueprintsError", f"no blueprint found for commit {commit}")
        return self.push(change.blueprint, f"{name}.toml reverted to commit {commit}")
