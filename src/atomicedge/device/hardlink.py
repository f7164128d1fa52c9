"""Fast hardlink checkout of a commit from the sysroot's own *bare* repo (the deploy hot path).

The store's :func:`atomicedge.ostree.checkout.checkout` is general (all repo modes, archive
inflation in a thread pool, union mode).  A deployment only ever needs "bare repo -> new
directory", where every file is one ``link()``: doing that single-threaded, with directory
file descriptors and without the pool, is what lets ``deploy`` keep up with
``ostree admin deploy``.  Safety is the same as the store's: names are validated before use
(no ``/``, ``.``, ``..``), every write is relative to an ``O_NOFOLLOW`` directory fd, and empty
files are copied rather than linked (ext4's hardlink limit, as ostree does since 2020).
Anything other than a bare repo falls back to the store's checkout.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from atomicedge.errors import NotFoundError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree.checkout import checkout as store_checkout
from atomicedge.ostree.objects import DirMeta, ObjectType, hexsum, validate_name
from atomicedge.ostree.repo import Repo

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIRTREE_SIG = "(a(say)a(sayay))"


def checkout(repo: Repo, csum: str, dest: Path) -> None:
    """Materialise commit ``csum`` at ``dest`` (which must not exist)."""
    if repo.mode != "bare":
        store_checkout(repo, csum, dest)
        return
    commit = repo.load_commit(csum)
    co = _Linker(repo)
    parent = os.open(dest.parent, _DIR)
    try:
        co.write_dir(parent, dest.name, commit.root_tree, commit.root_meta)
    finally:
        os.close(parent)


TreeEntries = tuple[list[tuple[str, str]], list[tuple[str, str, str]]]
_TREES: dict[tuple[str, str], TreeEntries] = {}


def tree_entries(repo: Repo, csum: str) -> TreeEntries:
    """Files and subdirs of a dirtree of the local repo (objects were verified when stored,
    so the normal-form re-encode is skipped; names are still validated)."""
    key = (str(repo.path), csum)
    hit = _TREES.get(key)
    if hit is not None:
        return hit
    data = repo.read_metadata_bytes(csum, ObjectType.DIR_TREE)
    files, dirs = gv.decode(DIRTREE_SIG, data, normal=False)
    out = ([(validate_name(n), hexsum(c)) for n, c in files],
           [(validate_name(n), hexsum(t), hexsum(m)) for n, t, m in dirs])
    if len(_TREES) > 50000:
        _TREES.clear()
    _TREES[key] = out
    return out


class _Linker:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.objects = str(repo.objects) + "/"
        self.metas: dict[str, DirMeta] = {}

    def _tree(self, csum: str) -> TreeEntries:
        return tree_entries(self.repo, csum)

    def _meta(self, csum: str) -> DirMeta:
        meta = self.metas.get(csum)
        if meta is None:
            meta = self.metas[csum] = self.repo.load_dirmeta(csum)
        return meta

    def write_dir(self, parent_fd: int, name: str, tree: str, meta_csum: str) -> None:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _DIR, dir_fd=parent_fd)
        try:
            files, dirs = self._tree(tree)
            for fname, fcsum in files:
                self._link(fd, fname, fcsum)
            for dname, dtree, dmeta in dirs:
                self.write_dir(fd, dname, dtree, dmeta)
            meta = self._meta(meta_csum)
            os.fchown(fd, meta.uid, meta.gid)
            for xname, value in meta.xattrs:
                os.setxattr(fd, xname[:-1], value)
            os.fchmod(fd, stat.S_IMODE(meta.mode))
            os.utime(fd, ns=(0, 0))
        finally:
            os.close(fd)

    def _link(self, dir_fd: int, name: str, csum: str) -> None:
        path = self.objects + csum[:2] + "/" + csum[2:] + ".file"  # hot path: no pathlib
        try:
            os.link(path, name, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            if not os.path.lexists(path):
                raise NotFoundError(f"content object {csum} is missing") from None
            raise
        st = os.lstat(name, dir_fd=dir_fd)
        if st.st_size == 0 and stat.S_ISREG(st.st_mode):  # copy empty files (EMLINK)
            os.unlink(name, dir_fd=dir_fd)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
                for xname in os.listxattr(path, follow_symlinks=False):
                    os.setxattr(fd, xname, os.getxattr(path, xname, follow_symlinks=False))
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            finally:
                os.close(fd)
