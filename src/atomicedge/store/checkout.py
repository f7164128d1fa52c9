"""Check a commit out into a directory.

Safety first: every dirtree below the start point is decoded (and its names validated) before
the first byte is written, and all writes go through directory file descriptors opened with
``O_NOFOLLOW``, so neither a hostile dirtree nor a symlink already in DEST can redirect a
write outside DEST. Bare repos are hardlinked (as ``ostree checkout`` does), empty files are
copied (ext4's hardlink limit), archive repos are inflated in a thread pool.
"""

from __future__ import annotations

import errno
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from atomicedge.errors import NotFoundError, UsageError
from atomicedge.store.content import load_content
from atomicedge.store.objects import DirMeta, FileHeader, ObjectType
from atomicedge.store.repo import Repo
from atomicedge.store.walk import lookup

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def checkout(repo: Repo, rev: str, dest: str | os.PathLike[str], *, user_mode: bool = False,
             subpath: str | None = None, union: bool = False) -> str:
    """Materialise ``rev`` (or its ``subpath``) at ``dest``; returns the commit checksum."""
    csum = repo.resolve_rev(rev)
    if repo.is_partial(csum):
        raise NotFoundError(f"commit {csum} is partial (its tree was not pulled)",
                            "pull it without --commit-metadata-only first")
    entry = lookup(repo, csum, subpath or "/")
    dest_path = Path(dest)
    if os.path.lexists(dest_path) and not union:
        raise UsageError(f"checkout destination {dest_path} already exists",
                         "choose a new directory or pass --union")
    if not dest_path.parent.is_dir():
        raise NotFoundError(f"parent directory of {dest_path} does not exist")
    co = _Checkout(repo, user_mode, union)
    if not entry.is_dir:
        parent_fd = os.open(dest_path.parent, _DIR_FLAGS)
        try:
            co.place_file(parent_fd, dest_path.name, entry.csum)
            co.drain()
        finally:
            os.close(parent_fd)
        return csum
    co.prevalidate(entry.csum)
    parent_fd = os.open(dest_path.parent, _DIR_FLAGS)
    try:
        co.write_dir(parent_fd, dest_path.name, entry.csum, entry.meta)
    finally:
        os.close(parent_fd)
    return csum


class _Checkout:
    def __init__(self, repo: Repo, user_mode: bool, union: bool) -> None:
        self.repo = repo
        self.user_mode = user_mode
        self.union = union
        self.hardlink = repo.mode == "bare" or (repo.mode in ("bare-user", "bare-user-only")
                                               and user_mode)
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.futures: list[Future[None]] = []

    def prevalidate(self, tree: str) -> None:
        stack = [tree]
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            for _n, sub, _m in self.repo.load_dirtree(t).dirs:  # decode validates names
                stack.append(sub)

    def drain(self) -> None:
        try:
            for f in self.futures:
                f.result()
        finally:
            self.futures.clear()
            self.pool.shutdown(wait=True)

    def write_dir(self, parent_fd: int, name: str, tree: str, meta_csum: str) -> None:
        try:
            self._write_dir(parent_fd, name, tree, meta_csum)
            self.drain()
        except BaseException:
            self.pool.shutdown(wait=True, cancel_futures=True)
            raise

    def _write_dir(self, parent_fd: int, name: str, tree_csum: str, meta_csum: str) -> None:
        meta = self.repo.load_dirmeta(meta_csum)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            if not self.union:
                raise UsageError(f"{name} already exists in the checkout destination") from None
            st = os.lstat(name, dir_fd=parent_fd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent_fd)
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        mine: list[Future[None]] = []
        try:
            tree = self.repo.load_dirtree(tree_csum)
            mine = [self.pool.submit(self._place_file, fd, fname, fcsum)
                    for fname, fcsum in tree.files]
            for dname, dtree, dmeta in tree.dirs:
                self._write_dir(fd, dname, dtree, dmeta)
            for fut in mine:
                fut.result()
            # after the children: a read-only directory mode must not block its own checkout
            self._apply_dirmeta(fd, meta)
        finally:
            for fut in mine:
                fut.cancel()
            wait(mine)
            os.close(fd)

    def _apply_dirmeta(self, fd: int, meta: DirMeta) -> None:
        if not self.user_mode:
            os.fchown(fd, meta.uid, meta.gid)
            for xname, value in meta.xattrs:
                os.setxattr(fd, xname[:-1], value)
            os.fchmod(fd, stat.S_IMODE(meta.mode))
        else:
            os.fchmod(fd, stat.S_IMODE(meta.mode) & 0o1777 | 0o700)
        os.utime(fd, ns=(0, 0))  # as ostree: checked-out directories carry mtime 0

    def place_file(self, dir_fd: int, name: str, csum: str) -> None:
        self.futures.append(self.pool.submit(self._place_file, dir_fd, name, csum))

    def _place_file(self, dir_fd: int, name: str, csum: str) -> None:
        if self.union:
            try:
                st = os.lstat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISDIR(st.st_mode):
                    raise UsageError(f"cannot replace directory {name} with a file (union)")
                os.unlink(name, dir_fd=dir_fd)
        if self.hardlink:
            path = self.repo.object_path(csum, ObjectType.FILE)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise NotFoundError(f"content object {csum} is missing") from None
            linkable = stat.S_ISLNK(st.st_mode) or st.st_size > 0
            if linkable and (self.repo.mode == "bare" or not self._is_user_symlink(path)):
                try:
                    os.link(path, name, dst_dir_fd=dir_fd, follow_symlinks=False)
                    return
                except OSError as exc:
                    if exc.errno not in (errno.EMLINK, errno.EXDEV):
                        raise
        header, content = load_content(self.repo, csum)
        self._write_file(dir_fd, name, header, content)

    def _is_user_symlink(self, path: Path) -> bool:
        """bare-user stores symlinks as files: those must be re-created, not linked."""
        from atomicedge.store.objects import decode_ostreemeta
        mode = decode_ostreemeta(os.getxattr(path, "user.ostreemeta"))[2]
        return stat.S_ISLNK(mode)

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
