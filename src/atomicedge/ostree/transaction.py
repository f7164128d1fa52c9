"""Write transactions: objects land in a private staging directory, then move into place.

Order, as libostree's: write objects under ``tmp/staging-*``, sync, rename each into
``objects/`` (an object is therefore either absent or complete), sync again, and only then
move refs. A ``kill -9`` at any point leaves refs pointing at complete, durable trees; the
dead staging directory is removed by the next writer (its flock is free).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from types import TracebackType

from atomicedge.errors import CorruptionError
from atomicedge.fsutil import boot_id, syncfs
from atomicedge.ostree import faults
from atomicedge.ostree import objects as ob
from atomicedge.ostree.content import write_object_file, write_plain
from atomicedge.ostree.layout import RepoLayout
from atomicedge.ostree.objects import FileHeader, ObjectType

_OUR_STAGING = re.compile(r"^staging-[0-9a-f]{32}-[0-9a-f]{8}$")


class Transaction:
    def __init__(self, repo: RepoLayout) -> None:
        self.repo = repo
        self._pending: dict[tuple[str, ObjectType], str] = {}
        self._refs: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self.staging: Path | None = None
        self._made_dirs: set[str] = set()
        self.written = 0
        self.level = int(repo.config.get("archive", "zlib-level") or 1)
        self.fsync = repo.fsync_enabled

    @classmethod
    def attach(cls, repo: RepoLayout, staging: Path) -> Transaction:
        """A writer into another transaction's staging dir (a forked pull worker): it
        stages objects and hands :meth:`staged` back; the owner commits them."""
        tx = cls(repo)
        tx.staging = staging
        return tx

    def staged(self) -> list[tuple[tuple[str, ObjectType], str]]:
        with self._lock:
            return list(self._pending.items())

    def adopt(self, staged: list[tuple[tuple[str, ObjectType], str]]) -> None:
        """Take over objects an attached writer staged in our staging dir."""
        with self._lock:
            self._pending.update(staged)

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Transaction:
        self._stack.enter_context(self.repo.lock(exclusive=False))
        tmp = self.repo.path / "tmp"
        tmp.mkdir(exist_ok=True)
        _remove_stale_staging(tmp)
        name = f"staging-{boot_id()}-{secrets.token_hex(4)}"
        lock_fd = os.open(tmp / f"{name}-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._stack.callback(os.close, lock_fd)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        self.staging = tmp / name
        self.staging.mkdir()
        self._stack.callback(_cleanup, self.staging, tmp / f"{name}-lock")
        faults.point("staging-created")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if et is None:
                self.commit()
        finally:
            self._stack.close()

    # -- writing -----------------------------------------------------------------------

    def has(self, csum: str, objtype: ObjectType) -> bool:
        return (csum, objtype) in self._pending or self.repo.has_object(csum, objtype)

    def _stage_path(self, csum: str, objtype: ObjectType) -> str:
        assert self.staging is not None, "transaction not entered"
        return f"{self.staging}/{csum}.{objtype.ext}"

    def _add(self, csum: str, objtype: ObjectType, path: str) -> None:
        with self._lock:
            self._pending[(csum, objtype)] = path

    def write_metadata(self, objtype: ObjectType, data: bytes,
                       expected: str | None = None, *, known_missing: bool = False) -> str:
        """Store a metadata object; ``expected`` (if given) must equal its checksum.

        ``known_missing``: the caller has just checked that the repo lacks it (a pull's
        bulk listing), so skip the per-object ``stat``.
        """
        csum = hashlib.sha256(data).hexdigest()
        if expected is not None and csum != expected:
            raise CorruptionError(f"{objtype.ext} object {expected} has checksum {csum}",
                                  "the source is corrupt or tampered with; nothing was stored")
        if not known_missing and self.has(csum, objtype):
            return csum
        self._write_verbatim(csum, objtype, data)
        return csum

    def write_content(self, header: FileHeader, content: bytes,
                      expected: str | None = None) -> str:
        csum = ob.content_checksum(header, content)
        if expected is not None and csum != expected:
            raise CorruptionError(f"content object {expected} has checksum {csum}",
                                  "the source is corrupt or tampered with; nothing was stored")
        self.write_content_trusted(csum, header, content)
        return csum

    def write_content_trusted(self, csum: str, header: FileHeader, content: bytes, *,
                              known_missing: bool = False) -> bool:
        """Store content whose checksum the caller just computed. Returns True if new."""
        if not known_missing and self.has(csum, ObjectType.FILE):
            return False
        path = self._stage_path(csum, ObjectType.FILE)
        try:
            write_object_file(self.repo.mode, path, header, content, self.level)
        except FileExistsError:  # another thread of this transaction won the race
            return False
        self._add(csum, ObjectType.FILE, path)
        faults.point("object-staged")
        return True

    def write_filez_verbatim(self, csum: str, filez: bytes, *,
                             known_missing: bool = False) -> None:
        """Archive repos: keep a verified ``.filez`` as received (no recompression)."""
        if not known_missing and self.has(csum, ObjectType.FILE):
            return
        self._write_verbatim(csum, ObjectType.FILE, filez)

    def _write_verbatim(self, csum: str, objtype: ObjectType, data: bytes) -> None:
        path = self._stage_path(csum, objtype)
        try:
            write_plain(path, data, 0o644)
        except FileExistsError:  # another thread of this transaction won the race
            return
        self._add(csum, objtype, path)
        faults.point("object-staged")

    def set_ref(self, ref: str, csum: str | None) -> None:
        self.repo.ref_path(ref)  # validates the name now, not at commit time
        self._refs[ref] = csum

    # -- commit ------------------------------------------------------------------------

    def commit(self) -> None:
        """Make staged objects durable and visible, then move refs."""
        if self._pending and self.fsync and self.staging is not None:
            syncfs(self.staging)
        faults.point("staging-synced")
        objdir = self.repo.objects
        for (csum, objtype), src in self._pending.items():
            prefix = csum[:2]
            if prefix not in self._made_dirs:
                (objdir / prefix).mkdir(exist_ok=True)
                self._made_dirs.add(prefix)
            os.rename(src, self.repo.object_path_str(csum, objtype))
            faults.point("object-renamed")
        self.written += len(self._pending)
        if self._pending and self.fsync:
            syncfs(objdir)  # covers the renames' directory entries too
        faults.point("objects-synced")
        self._pending.clear()
        for ref, target in self._refs.items():
            self.repo.set_ref(ref, target)
            faults.point("ref-written")
        self._refs.clear()


def _cleanup(staging: Path, lockfile: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    lockfile.unlink(missing_ok=True)


def _remove_stale_staging(tmp: Path) -> None:
    """Delete staging dirs whose writer died (their lock is free) and that are not new."""
    now = time.time()
    for entry in os.scandir(tmp):
        if not _OUR_STAGING.match(entry.name):
            continue  # libostree's own staging dirs are its business
        lock_path = tmp / f"{entry.name}-lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # the lock is gone, so the owner finished its cleanup half-way or is very old
            if now - entry.stat(follow_symlinks=False).st_mtime > 3600:
                shutil.rmtree(entry.path, ignore_errors=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        os.close(fd)
