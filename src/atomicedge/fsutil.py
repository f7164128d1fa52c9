"""Crash-safe file-system primitives shared by the store, the device agent and the composer.

Every write that matters goes through :func:`atomic_write`: temp file in the same directory,
fsync, rename, fsync of the directory. A reader therefore sees the old or the new content,
never a torn file, even after ``kill -9`` or a power cut.
"""

from __future__ import annotations

import ctypes
import os
import secrets
from collections.abc import Callable
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path | str) -> None:
    """Flush the whole file system holding ``path`` (what ostree does once per transaction)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: bytes | str, *, mode: int = 0o644,
                 fsync: bool = True,
                 before_rename: Callable[[int], None] | None = None) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, nothing else.

    ``before_rename(fd)`` may set xattrs or times on the new file before it appears.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if before_rename is not None:
                before_rename(fd)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_symlink(target: str, path: Path | str) -> None:
    """Point symlink ``path`` at ``target`` atomically (create + rename over)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    os.symlink(target, tmp)
    try:
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return "0" * 32
