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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree import faults, forkpool
from atomicedge.ostree import objects as ob
from atomicedge.ostree.content import write_object_file
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import Commit, DirMeta, DirTree, FileHeader, ObjectType
from atomicedge.ostree.repo import Repo, read_xattrs
from atomicedge.ostree.transaction import Transaction

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


def parse_metadata_strings(items: list[str], flag: str) -> dict[str, Variant]:
    """``KEY=VALUE`` strings from the command line -> string-typed metadata."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE")
        out[key] = Variant("s", value)
    return out


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
        repo.ref_path(opts.branch)  # validate before any work
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
        ctx = _WorkerContext(self.repo.mode, str(self.tx.staging), str(self.repo.objects),
                             self.tx.level, self.opts.xattrs, self.opts.generate_sizes)
        paths = [path for _d, _n, path in jobs]
        results = _run_jobs(ctx, paths)
        for (d, name, _p), (csum, staged, archived, unpacked) in zip(jobs, results, strict=True):
            d.files[name] = csum
            if staged:
                self.tx._add(csum, ObjectType.FILE, staged)
            if self.opts.generate_sizes:
                self.sizes[csum] = (archived, unpacked, ObjectType.FILE)
            self.done_files += 1
            self.done_bytes += unpacked
            if self.progress and self.done_files % 256 == 0:
                self.progress(self.done_files, self.done_bytes)
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

    def _write_dirs(self, d: _Dir) -> tuple[str, str]:
        dirs = tuple((name, *self._write_dirs(sub)) for name, sub in d.subdirs.items())
        tree = DirTree(tuple(d.files.items()), dirs)
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


@dataclass(frozen=True)
class _WorkerContext:
    mode: str
    staging: str
    objects: str
    level: int
    xattrs: bool
    sizes: bool


_CTX: _WorkerContext | None = None
_PARALLEL_MIN_FILES = 256


def _run_jobs(ctx: _WorkerContext, paths: list[str]) -> list[tuple[str, str, int, int]]:
    """Hash and stage every file; in forked workers when there are many."""
    global _CTX
    _CTX = ctx
    n = forkpool.workers()
    if len(paths) < _PARALLEL_MIN_FILES or n < 2:
        return _stage_batch(paths)
    chunk = max(64, len(paths) // (n * 6))
    batches = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    return [r for res in forkpool.fork_map(_stage_batch, batches) for r in res]


def _stage_batch(paths: list[str]) -> list[tuple[str, str, int, int]]:
    assert _CTX is not None
    return [_stage_file(_CTX, p) for p in paths]


def _stage_file(ctx: _WorkerContext, path: str) -> tuple[str, str, int, int]:
    """(checksum, staged path or "" when the object exists, archived size, unpacked size)."""
    st = os.lstat(path)
    xattrs = read_xattrs(path) if ctx.xattrs else ()
    if stat.S_ISLNK(st.st_mode):
        h = FileHeader(st.st_uid, st.st_gid, st.st_mode, os.readlink(path), xattrs)
        content = b""
        unpacked = len(os.fsencode(h.symlink_target))
    else:
        h = FileHeader(st.st_uid, st.st_gid, st.st_mode, "", xattrs)
        content = _read_all(path, st.st_size)
        unpacked = len(content)
    csum = ob.content_checksum(h, content)
    ext = "filez" if ctx.mode == "archive" else "file"
    final = f"{ctx.objects}/{csum[:2]}/{csum[2:]}.{ext}"
    staged = f"{ctx.staging}/{csum}.file"
    if os.path.lexists(final):
        return csum, "", _archived_size(ctx, final, unpacked), unpacked
    try:
        write_object_file(ctx.mode, staged, h, content, ctx.level)
    except FileExistsError:  # the same content twice in this commit
        return csum, "", _archived_size(ctx, staged, unpacked), unpacked
    faults.point("file-staged")
    return csum, staged, _archived_size(ctx, staged, unpacked), unpacked


def _read_all(path: str, size: int) -> bytes:
    """os.read instead of open(): a buffered file object costs three extra syscalls."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        data = os.read(fd, size + 1)
        # a short read, or a file that grew while we read it: take the rest too
        return data if len(data) == size else data + _read_rest(fd)
    finally:
        os.close(fd)


def _read_rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _archived_size(ctx: _WorkerContext, path: str, unpacked: int) -> int:
    if not ctx.sizes or ctx.mode != "archive":
        return unpacked
    return os.lstat(path).st_size
