"""Where a repository's parts live on disk: config, lock, object paths, refs.

This is what the repository (:mod:`repo`), its content objects (:mod:`content`) and its
write transactions (:mod:`transaction`) share, so each of them imports only downward:
repo -> transaction -> content -> layout. The on-disk layout is libostree's, so the real
``ostree`` and atomicedge can take turns on the same repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from atomicedge.errors import CorruptionError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.ostree import objects as ob
from atomicedge.ostree.keyfile import KeyFile
from atomicedge.ostree.objects import ObjectType

MODES = ("archive", "bare", "bare-user", "bare-user-only")
_MODE_ALIASES = {"archive-z2": "archive"}
REF_COMPONENT = re.compile(r"^[\w\d][-._\w\d]*$")


def normalize_mode(mode: str) -> str:
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise UsageError(f"unknown repository mode {mode!r}",
                         f"choose one of: {', '.join(MODES)}")
    return mode


def validate_ref(ref: str) -> str:
    if not ref or any(not REF_COMPONENT.match(p) for p in ref.split("/")):
        raise UsageError(f"invalid ref name {ref!r}",
                         "ref components use letters, digits, '-', '.', '_' separated by '/'")
    return ref


class RepoLayout:
    """One repository directory: its mode and config, its lock, object paths, refs."""

    def __init__(self, path: Path, config: KeyFile) -> None:
        self.path = path
        self.config = config
        self.mode = normalize_mode(config.get("core", "mode") or "bare")
        self.objects = path / "objects"
        self._objects_str = str(self.objects)
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._lock_exclusive = False

    def write_config(self) -> None:
        atomic_write(self.path / "config", self.config.dump())

    @property
    def fsync_enabled(self) -> bool:
        return self.config.get_bool("core", "fsync", True)

    @property
    def is_archive(self) -> bool:
        return self.mode == "archive"

    # -- locking -----------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, exclusive: bool = False) -> Iterator[None]:
        """libostree-compatible repo lock: OFD lock on ``.lock``, shared or exclusive."""
        if self._lock_depth and (self._lock_exclusive or not exclusive):
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi4x", kind, 0, 0, 0, 0))
        prev = (self._lock_fd, self._lock_depth, self._lock_exclusive)
        self._lock_fd, self._lock_depth, self._lock_exclusive = fd, 1, exclusive
        try:
            yield
        finally:
            os.close(fd)
            self._lock_fd, self._lock_depth, self._lock_exclusive = prev

    # -- objects -----------------------------------------------------------------------

    def object_path(self, csum: str, objtype: ObjectType) -> Path:
        return Path(self.object_path_str(csum, objtype))

    def object_path_str(self, csum: str, objtype: ObjectType) -> str:
        """String form for hot loops (pathlib costs more than the syscall it wraps)."""
        ext = "filez" if objtype == ObjectType.FILE and self.is_archive else objtype.ext
        return f"{self._objects_str}/{csum[:2]}/{csum[2:]}.{ext}"

    def has_object(self, csum: str, objtype: ObjectType) -> bool:
        return os.path.lexists(self.object_path_str(csum, objtype))

    def is_partial(self, csum: str) -> bool:
        return (self.path / "state" / f"{csum}.commitpartial").exists()

    # -- refs --------------------------------------------------------------------------

    def ref_path(self, ref: str) -> Path:
        """``remote:name`` -> refs/remotes/remote/name; ``name`` -> refs/heads/name.

        Raises UsageError for an invalid name, so it also validates one.
        """
        remote, sep, name = ref.rpartition(":")
        if sep:
            validate_ref(remote)
            return self.path / "refs" / "remotes" / remote / validate_ref(name)
        return self.path / "refs" / "heads" / validate_ref(name)

    def read_ref(self, ref: str) -> str | None:
        path = self.ref_path(ref)
        try:
            text = path.read_text().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if not ob.CHECKSUM_RE.match(text):
            raise CorruptionError(f"ref {ref} holds {text[:80]!r}, not a checksum")
        return text

    def set_ref(self, ref: str, csum: str | None) -> None:
        """Point ``ref`` at ``csum`` (None deletes it), atomically and durably."""
        path = self.ref_path(ref)
        if csum is None:
            if not path.exists():
                raise NotFoundError(f"ref {ref} does not exist")
            path.unlink()
            return
        ob.validate_checksum(csum)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, csum + "\n", fsync=self.fsync_enabled)
