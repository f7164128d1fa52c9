"""Check a commit out into a directory.

Three phases: (1) decode and validate every dirtree below the start point and create the
directory skeleton — nothing is written before the whole tree is known to be safe, and a
symlink already in DEST where a directory belongs is replaced, never followed; (2) place the
files, in forked workers when there are many (hardlinks for bare repos as ``ostree
checkout`` does, copies for empty files because of ext4's hardlink limit, inflation for
archive repos); (3) apply directory metadata bottom-up, so a read-only directory cannot
block its own checkout. Files are created relative to directory fds opened ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree import forkpool
from atomicedge.ostree.content import load_content
from atomicedge.ostree.objects import DirMeta, FileHeader, ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import lookup

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PARALLEL_MIN_FILES = 512


@dataclass
class _Dir:
    path: str  # absolute
    meta: DirMeta
    files: tuple[tuple[str, str], ...]


def checkout(repo: Repo, rev: str, dest: str | os.PathLike[str], *, user_mode: bool = False,
             subpath: str | None = None, union: bool = False) -> str:
    """Materialise ``rev`` (or its ``subpath``) at ``dest``; returns the commit checksum."""
    csum = repo.resolve_rev(rev)
    if repo.is_partial(csum):
        raise NotFoundError(f"commit {csum} is partial (its tree was not pulled)",
                            "pull it without --commit-metadata-only first")
    entry = lookup(repo, csum, subpath or "/")
    dest_path = Path(dest).absolute()
    if os.path.lexists(dest_path) and not union:
        raise UsageError(f"checkout destination {dest_path} already exists",
                         "choose a new directory or pass --union")
    if not dest_path.parent.is_dir():
        raise NotFoundError(f"parent directory of {dest_path} does not exist")
    placer = _Placer(repo, user_mode, union)
    if not entry.is_dir:
        placer.place_batch([(str(dest_path.parent), ((dest_path.name, entry.csum),))])
        return csum
    _prevalidate(repo, entry.csum)
    dirs: list[_Dir] = []
    _make_skeleton(repo, str(dest_path), entry.csum, entry.meta, union, dirs)
    placer.place_all([(d.path, d.files) for d in dirs if d.files])
    for d in reversed(dirs):  # children before parents
        fd = os.open(d.path, _DIR_FLAGS)
        try:
            _apply_dirmeta(fd, d.meta, user_mode)
        finally:
            os.close(fd)
    return csum


def _prevalidate(repo: Repo, tree: str) -> None:
    """Decode every dirtree (which validates every name) before anything is written."""
    stack, seen = [tree], set()
    while stack:
        t = stack.pop()
        if t not in seen:
            seen.add(t)
            stack.extend(sub for _n, sub, _m in repo.load_dirtree(t).dirs)


def _make_skeleton(repo: Repo, path: str, tree_csum: str, meta_csum: str, union: bool,
                   acc: list[_Dir]) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not union:
            raise UsageError(f"{path} already exists in the checkout destination") from None
        if not stat.S_ISDIR(os.lstat(path).st_mode):  # e.g. a planted symlink: replace it
            os.unlink(path)
            os.mkdir(path, 0o700)
    tree = repo.load_dirtree(tree_csum)
    acc.append(_Dir(path, repo.load_dirmeta(meta_csum), tree.files))
    for name, sub, meta in tree.dirs:
        _make_skeleton(repo, f"{path}/{name}", sub, meta, union, acc)


def _apply_dirmeta(fd: int, meta: DirMeta, user_mode: bool) -> None:
    if not user_mode:
        os.fchown(fd, meta.uid, meta.gid)
        for xname, value in meta.xattrs:
            os.setxattr(fd, xname[:-1], value)
        os.fchmod(fd, stat.S_IMODE(meta.mode))
    else:
        os.fchmod(fd, stat.S_IMODE(meta.mode) & 0o1777 | 0o700)
    os.utime(fd, ns=(0, 0))  # as ostree: checked-out directories carry mtime 0


_PLACER: _Placer | None = None


def _worker_batch(batch: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
    assert _PLACER is not None
    _PLACER.place_batch(batch)


class _Placer:
    def __init__(self, repo: Repo, user_mode: bool, union: bool) -> None:
        self.repo = repo
        self.user_mode = user_mode
        self.union = union
        self.hardlink = repo.mode == "bare" or (repo.mode in ("bare-user", "bare-user-only")
                                               and user_mode)

    def place_all(self, work: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
        """In forked workers when there are many files (see forkpool)."""
        total = sum(len(files) for _p, files in work)
        workers = forkpool.workers()
        if total < _PARALLEL_MIN_FILES or workers < 2:
            self.place_batch(work)
            return
        global _PLACER
        _PLACER = self
        batches: list[list[tuple[str, tuple[tuple[str, str], ...]]]] = [[]]
        size, limit = 0, max(64, total // (workers * 6))
        for item in work:
            batches[-1].append(item)
            size += len(item[1])
            if size >= limit:
                batches.append([])
                size = 0
        forkpool.fork_map(_worker_batch, [b for b in batches if b])

    def place_batch(self, work: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
        for path, files in work:
            fd = os.open(path, _DIR_FLAGS)
            try:
                for name, csum in files:
                    self.place_file(fd, name, csum)
            finally:
                os.close(fd)

    def place_file(self, dir_fd: int, name: str, csum: str) -> None:
        if self.union:
            try:
                st = os.lstat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISDIR(st.st_mode):
                    raise UsageError(f"cannot replace directory {name} with a file (union)")
                os.unlink(name, dir_fd=dir_fd)
        if self.hardlink and self._try_link(dir_fd, name, csum):
            return
        header, content = load_content(self.repo, csum)
        self._write_file(dir_fd, name, header, content)

    def _try_link(self, dir_fd: int, name: str, csum: str) -> bool:
        path = self.repo.object_path_str(csum, ObjectType.FILE)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise NotFoundError(f"content object {csum} is missing") from None
        if not stat.S_ISLNK(st.st_mode) and st.st_size == 0:
            return False  # empty files are copied: ext4 caps hardlinks per inode
        if self.repo.mode == "bare-user" and _is_user_symlink(path):
            return False  # bare-user keeps symlinks as files: re-create the real link
        try:
            os.link(path, name, dst_dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EMLINK, errno.EXDEV):
                raise
            return False
        return True

    def _write_file(self, dir_fd: int, name: str, h: FileHeader, content: bytes) -> None:
        if h.is_symlink:
            os.symlink(h.symlink_target, name, dir_fd=dir_fd)
            if not self.user_mode:
                os.chown(name, h.uid, h.gid, dir_fd=dir_fd, follow_symlinks=False)
                for xname, value in h.xattrs:
                    os.setxattr(f"/proc/self/fd/{dir_fd}/{name}", xname[:-1], value,
                                follow_symlinks=False)
            return
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            mode = stat.S_IMODE(h.mode)
            if not self.user_mode:
                os.fchown(fd, h.uid, h.gid)
                for xname, value in h.xattrs:
                    os.setxattr(fd, xname[:-1], value)
            else:
                mode &= ~(stat.S_ISUID | stat.S_ISGID)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _is_user_symlink(path: str) -> bool:
    meta = os.getxattr(path, "user.ostreemeta")
    return stat.S_ISLNK(int.from_bytes(meta[8:12], "big"))  # (uid, gid, mode, ...) BE
