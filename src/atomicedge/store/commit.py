"""Commit a directory into a repository, producing the same checksums as ``ostree commit``.

Files are read, hashed and written by a pool of workers (hashlib, deflate and file I/O drop
the GIL), directories are assembled bottom-up in the caller's thread once their children
are known. Objects already in the repository are never rewritten.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from atomicedge.errors import NotFoundError, UsageError
from atomicedge.store import objects as ob
from atomicedge.store.gvariant import Variant
from atomicedge.store.objects import Commit, DirMeta, DirTree, FileHeader, ObjectType
from atomicedge.store.repo import Repo, read_xattrs
from atomicedge.store.transaction import Transaction

Progress = Callable[[int, int], None]  # (files done, bytes done)


@dataclass
class CommitOptions:
    branch: str | None = None
    subject: str = ""
    body: str = ""
    parent: str | None = None  # None: branch tip; "none": no parent; else a rev
    timestamp: int | None = None
    metadata: dict[str, Variant] = field(default_factory=dict)
    bootable: bool = False
    generate_sizes: bool = False
    xattrs: bool = True
    skip_special: bool = False
    bind_ref: bool = True


@dataclass
class _Dir:
    path: str
    meta: DirMeta
    files: dict[str, str] = field(default_factory=dict)  # name -> content csum (filled later)
    subdirs: dict[str, _Dir] = field(default_factory=dict)
    pending: list[tuple[str, str]] = field(default_factory=list)  # (name, path)


def parse_timestamp(text: str) -> int:
    """``@EPOCH`` or ISO 8601 (``2020-01-01T00:00:00Z``, with offset, or a date)."""
    t = text.strip()
    if re.fullmatch(r"@-?\d+", t):
        return int(t[1:])
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise UsageError(f"cannot parse timestamp {text!r}",
                         "use @EPOCH_SECONDS or ISO 8601 like 2024-01-31T12:00:00Z") from None
    if dt.tzinfo is None:
        from datetime import UTC
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def commit_directory(repo: Repo, src: str | os.PathLike[str], *,
                     progress: Progress | None = None, **kwargs: object) -> str:
    """Commit ``src``; keyword arguments are the fields of :class:`CommitOptions`."""
    opts = CommitOptions(**kwargs)  # type: ignore[arg-type]
    src_path = Path(src)
    if not src_path.exists():
        raise NotFoundError(f"directory to commit {src_path} does not exist")
    if not src_path.is_dir():
        raise UsageError(f"{src_path} is not a directory", "commit takes a directory tree")
    parent = _resolve_parent(repo, opts)
    timestamp = _default_timestamp(opts.timestamp)
    with repo.transaction() as tx:
        writer = _TreeWriter(repo, tx, opts, progress)
        root_tree, root_meta = writer.write(src_path)
        metadata = dict(opts.metadata)
        if opts.bootable:
            metadata.update(_bootable_metadata(src_path))
        if opts.branch and opts.bind_ref and "ostree.ref-binding" not in metadata:
            metadata["ostree.ref-binding"] = Variant("as", [opts.branch])
        cid = repo.config.get("core", "collection-id")
        if cid and opts.bind_ref and "ostree.collection-binding" not in metadata:
            metadata["ostree.collection-binding"] = Variant("s", cid)
        if opts.generate_sizes:
            metadata["ostree.sizes"] = Variant("aay", writer.size_entries())
        commit = Commit(root_tree, root_meta, metadata, parent, opts.subject, opts.body,
                        timestamp)
        csum = tx.write_metadata(ObjectType.COMMIT, commit.encode())
        if opts.branch:
            tx.set_ref(opts.branch, csum)
    return csum


def _resolve_parent(repo: Repo, opts: CommitOptions) -> str | None:
    if opts.branch:
        repo._ref_path(opts.branch)  # validate before any work
    if opts.parent == "none":
        return None
    if opts.parent:
        return repo.resolve_rev(opts.parent)
    if opts.branch:
        return repo.read_ref(opts.branch)
    return None


def _default_timestamp(ts: int | None) -> int:
    if ts is not None:
        return ts
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    return int(sde) if sde and sde.isdigit() else int(time.time())


def _bootable_metadata(root: Path) -> dict[str, Variant]:
    """``ostree.bootable``/``ostree.linux``: exactly one ``usr/lib/modules/*/vmlinuz``."""
    mods = root / "usr" / "lib" / "modules"
    kernels = sorted(p.parent.name for p in mods.glob("*/vmlinuz")) if mods.is_dir() else []
    if len(kernels) != 1:
        raise UsageError(f"--bootable needs exactly one usr/lib/modules/*/vmlinuz, "
                         f"found {len(kernels)}", "install one kernel in the tree")
    return {"ostree.bootable": Variant("b", True), "ostree.linux": Variant("s", kernels[0])}


class _TreeWriter:
    def __init__(self, repo: Repo, tx: Transaction, opts: CommitOptions,
                 progress: Progress | None) -> None:
        self.repo = repo
        self.tx = tx
        self.opts = opts
        self.progress = progress
        self.sizes: dict[str, tuple[int, int, ObjectType]] = {}
        self.done_files = 0
        self.done_bytes = 0

    def write(self, root: Path) -> tuple[str, str]:
        dirs: list[_Dir] = []
        top = self._scan(str(root), dirs)
        jobs = [(d, name, path) for d in dirs for name, path in d.pending]
        workers = max(2, min(8, (os.cpu_count() or 2) * 2))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            chunk = max(1, len(jobs) // (workers * 8))
            batches = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
            for results in pool.map(self._write_batch, batches):
                for d, name, csum in results:
                    d.files[name] = csum
        return self._write_dirs(top)

    def _scan(self, path: str, acc: list[_Dir]) -> _Dir:
        st = os.lstat(path)
        d = _Dir(path, DirMeta(st.st_uid, st.st_gid, st.st_mode, self._xattrs(path)))
        acc.append(d)
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for e in entries:
            name = _checked_name(e.path)
            if e.is_dir(follow_symlinks=False):
                d.subdirs[name] = self._scan(e.path, acc)
            elif e.is_file(follow_symlinks=False) or e.is_symlink():
                d.pending.append((name, e.path))
            elif not self.opts.skip_special:
                raise UsageError(f"{e.path} is a {_kind(e.path)}, which OSTree cannot store",
                                 "remove it or pass --skip-special (the tree then omits it)")
        return d

    def _xattrs(self, path: str) -> ob.Xattrs:
        return read_xattrs(path) if self.opts.xattrs else ()

    def _write_batch(self, batch: list[tuple[_Dir, str, str]]) -> list[tuple[_Dir, str, str]]:
        out = []
        for d, name, path in batch:
            out.append((d, name, self._write_file(path)))
        return out

    def _write_file(self, path: str) -> str:
        st = os.lstat(path)
        xattrs = self._xattrs(path)
        if stat.S_ISLNK(st.st_mode):
            h = FileHeader(st.st_uid, st.st_gid, st.st_mode, os.readlink(path), xattrs)
            content = b""
        else:
            h = FileHeader(st.st_uid, st.st_gid, st.st_mode, "", xattrs)
            with open(path, "rb") as f:
                content = f.read()
        csum = ob.content_checksum(h, content)
        self.tx.write_content_trusted(csum, h, content)
        if self.opts.generate_sizes:
            self._record_file_size(csum, h, content)
        self.done_files += 1
        self.done_bytes += len(content)
        if self.progress and self.done_files % 256 == 0:
            self.progress(self.done_files, self.done_bytes)
        return csum

    def _record_file_size(self, csum: str, h: FileHeader, content: bytes) -> None:
        if self.repo.is_archive:
            archived = os.lstat(self.repo.object_path(csum, ObjectType.FILE)
                                if self.repo.has_object(csum, ObjectType.FILE)
                                else self.tx._stage_path(csum, ObjectType.FILE)).st_size
        else:
            archived = len(content)
        unpacked = len(h.symlink_target.encode()) if h.is_symlink else len(content)
        self.sizes[csum] = (archived, unpacked, ObjectType.FILE)

    def _write_dirs(self, d: _Dir) -> tuple[str, str]:
        dirs = tuple((name, *self._write_dirs(sub)) for name, sub in d.subdirs.items())
        tree = DirTree(tuple(d.files.items()), dirs)  # type: ignore[arg-type]
        tree_csum = self._meta(ObjectType.DIR_TREE, tree.encode())
        meta_csum = self._meta(ObjectType.DIR_META, d.meta.encode())
        return tree_csum, meta_csum

    def _meta(self, objtype: ObjectType, data: bytes) -> str:
        csum = self.tx.write_metadata(objtype, data)
        if self.opts.generate_sizes:
            self.sizes[csum] = (len(data), len(data), objtype)
        return csum

    def size_entries(self) -> list[bytes]:
        return [ob.size_entry(c, a, u, t) for c, (a, u, t) in sorted(self.sizes.items())]


def _checked_name(path: str) -> str:
    name = os.path.basename(path)
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"file name is not valid UTF-8: {path!r}",
                         "OSTree stores names as UTF-8; rename the file") from None
    return name


def _kind(path: str) -> str:
    mode = os.lstat(path).st_mode
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"
