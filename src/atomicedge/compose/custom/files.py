"""[[customizations.directories]] and [[customizations.files]] with owner and mode.

Owners are resolved against the *image's* /etc/passwd and /etc/group (after the users step), never
the build host's. Each file is written fresh (unlink + create) so a hard-linked cached tree is
never modified through a shared inode.
"""

from __future__ import annotations

import os
from pathlib import Path

from atomicedge.compose.blueprint import DirSpec, FileSpec
from atomicedge.compose.custom.accounts import read_db
from atomicedge.errors import UsageError


def _ids(tree: Path, user: str | int, group: str | int, path: str) -> tuple[int, int]:
    def one(value: str | int, db: str, what: str) -> int:
        if isinstance(value, int):
            return value
        entries = read_db(tree, db)
        if value not in entries:
            raise UsageError(f"{path}: {what} {value!r} does not exist in the image",
                             f"create it with [[customizations.{what}]] or use a numeric id")
        return int(entries[value][2])
    return one(user, "passwd", "user"), one(group, "group", "group")


def _inside(tree: Path, path: str) -> Path:
    target = tree / path.lstrip("/")
    real_parent = os.path.realpath(target.parent)
    if not (real_parent + "/").startswith(os.path.realpath(tree) + "/"):
        raise UsageError(f"{path}: its parent resolves outside the image", "check symlinks in /etc")
    return target


def apply_dirs(tree: Path, dirs: tuple[DirSpec, ...]) -> None:
    for spec in dirs:
        target = _inside(tree, spec.path)
        uid, gid = _ids(tree, spec.user, spec.group, spec.path)
        if not target.parent.is_dir():
            if not spec.ensure_parents:
                raise UsageError(f"directory {spec.path}: parent does not exist in the image",
                                 "set ensure_parents = true")
            target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not target.is_dir():
            raise UsageError(f"directory {spec.path}: a file of that name exists in the image")
        target.mkdir(exist_ok=True)
        os.chown(target, uid, gid)
        os.chmod(target, spec.mode)


def apply_files(tree: Path, files: tuple[FileSpec, ...]) -> None:
    for spec in files:
        target = _inside(tree, spec.path)
        uid, gid = _ids(tree, spec.user, spec.group, spec.path)
        if not target.parent.is_dir():
            raise UsageError(f"file {spec.path}: parent directory does not exist in the image",
                             "add a [[customizations.directories]] entry with ensure_parents")
        if target.is_dir():
            raise UsageError(f"file {spec.path}: a directory of that name exists in the image")
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, spec.data.encode())
            os.fchown(fd, uid, gid)
            os.fchmod(fd, spec.mode)
        finally:
            os.close(fd)
