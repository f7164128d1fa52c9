"""An OSTree-format repository on disk: layout, config, object I/O, refs, locking.

The on-disk layout is libostree's (see ARCHITECTURE.md, "store"), so the real ``ostree`` and
atomicedge can take turns on the same repository. Writes happen in a :class:`Transaction`;
objects only appear under ``objects/`` complete, and refs move last.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomicedge.errors import CorruptionError, FormatError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.ostree import objects as ob
from atomicedge.ostree.keyfile import KeyFile
from atomicedge.ostree.objects import Commit, DirMeta, DirTree, FileHeader, ObjectType

if TYPE_CHECKING:
    from atomicedge.ostree.transaction import Transaction

MODES = ("archive", "bare", "bare-user", "bare-user-only")
_MODE_ALIASES = {"archive-z2": "archive"}
REF_COMPONENT = re.compile(r"^[\w\d][-._\w\d]*$")
MAX_METADATA_SIZE = 128 * 1024 * 1024
OSTREEMETA = "user.ostreemeta"


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


def read_xattrs(path: str | os.PathLike[str]) -> ob.Xattrs:
    """All xattrs of ``path`` (not following symlinks), NUL-terminated names, sorted."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    out = []
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise
        out.append((name.encode() + b"\0", value))
    out.sort()
    return tuple(out)


class Repo:
    """Handle on one repository directory."""

    def __init__(self, path: Path, config: KeyFile) -> None:
        self.path = path
        self.config = config
        self.mode = normalize_mode(config.get("core", "mode") or "bare")
        self.objects = path / "objects"
        self._objects_str = str(self.objects)
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._lock_exclusive = False

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str], mode: str = "archive",
             collection_id: str | None = None) -> Repo:
        path = Path(path)
        mode = normalize_mode(mode)
        if (path / "objects").is_dir() and (path / "config").is_file():
            repo = cls.open(path)
            if repo.mode != mode:
                raise UsageError(f"{path} is already a {repo.mode} repository, not {mode}")
            return repo
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} exists and is not a directory")
        for sub in ("objects", "refs/heads", "refs/remotes", "refs/mirrors", "state",
                    "tmp/cache", "extensions"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        kf = KeyFile()
        kf.set("core", "repo_version", "1")
        kf.set("core", "mode", "archive-z2" if mode == "archive" else mode)
        if collection_id:
            kf.set("core", "collection-id", collection_id)
        atomic_write(path / "config", kf.dump())
        return cls(path, kf)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Repo:
        path = Path(path)
        if not path.exists():
            raise NotFoundError(f"repository {path} does not exist",
                                f"create it with: atomicedge repo init --repo {path}")
        if not (path / "objects").is_dir() or not (path / "config").is_file():
            raise NotFoundError(f"{path} is not an OSTree repository (no objects/ or config)")
        kf = KeyFile.load(path / "config")
        if kf.get("core", "repo_version") != "1":
            raise FormatError(f"{path}/config: unsupported repo_version "
                              f"{kf.get('core', 'repo_version')!r}")
        return cls(path, kf)

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

    def transaction(self) -> Transaction:
        from atomicedge.ostree.transaction import Transaction
        return Transaction(self)

    # -- objects -----------------------------------------------------------------------

    def object_path(self, csum: str, objtype: ObjectType) -> Path:
        return Path(self.object_path_str(csum, objtype))

    def object_path_str(self, csum: str, objtype: ObjectType) -> str:
        """String form for hot loops (pathlib costs more than the syscall it wraps)."""
        ext = "filez" if objtype == ObjectType.FILE and self.is_archive else objtype.ext
        return f"{self._objects_str}/{csum[:2]}/{csum[2:]}.{ext}"

    def has_object(self, csum: str, objtype: ObjectType) -> bool:
        return os.path.lexists(self.object_path_str(csum, objtype))

    def read_metadata_bytes(self, csum: str, objtype: ObjectType, *,
                            verify: bool = False) -> bytes:
        path = self.object_path_str(ob.validate_checksum(csum), objtype)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_METADATA_SIZE + 1)
        except FileNotFoundError:
            raise NotFoundError(f"{objtype.ext} object {csum} is missing") from None
        if len(data) > MAX_METADATA_SIZE:
            raise CorruptionError(f"{objtype.ext} object {csum} is larger than 128 MiB")
        if verify and objtype not in (ObjectType.COMMIT_META, ObjectType.TOMBSTONE_COMMIT):
            actual = hashlib.sha256(data).hexdigest()
            if actual != csum:
                raise CorruptionError(f"corrupted object {csum}.{objtype.ext}: "
                                      f"content hashes to {actual}")
        return data

    def load_commit(self, csum: str) -> Commit:
        return Commit.decode(self.read_metadata_bytes(csum, ObjectType.COMMIT))

    def load_dirtree(self, csum: str) -> DirTree:
        return _cached_dirtree(self, csum)

    def load_dirmeta(self, csum: str) -> DirMeta:
        return DirMeta.decode(self.read_metadata_bytes(csum, ObjectType.DIR_META))

    def read_detached_metadata(self, csum: str) -> dict[str, Any] | None:
        try:
            data = self.read_metadata_bytes(csum, ObjectType.COMMIT_META)
        except NotFoundError:
            return None
        return ob.decode_metadata_dict(data)

    def write_detached_metadata(self, csum: str, meta: dict[str, Any] | None) -> None:
        path = self.object_path(csum, ObjectType.COMMIT_META)
        if meta is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, ob.encode_metadata_dict(meta), fsync=self.fsync_enabled)

    def is_partial(self, csum: str) -> bool:
        return (self.path / "state" / f"{csum}.commitpartial").exists()

    def load_content(self, csum: str) -> tuple[FileHeader, bytes]:
        """Header and full content of a file object, whatever the repo mode."""
        from atomicedge.ostree.content import load_content
        return load_content(self, csum)

    def iter_objects(self) -> Iterator[tuple[str, ObjectType]]:
        """Every loose object in ``objects/`` (checksum, type), in no particular order."""
        try:
            prefixes = os.scandir(self.objects)
        except FileNotFoundError:
            return
        with prefixes:
            for pre in prefixes:
                if len(pre.name) != 2 or not pre.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(pre.path):
                    rest, dot, ext = entry.name.partition(".")
                    if ext == "filez":
                        ext = "file"
                    objtype = ob.EXT_TO_TYPE.get(ext)
                    csum = pre.name + rest
                    if dot and objtype and ob.CHECKSUM_RE.match(csum):
                        yield csum, objtype

    # -- refs --------------------------------------------------------------------------

    def _ref_path(self, ref: str) -> Path:
        """``remote:name`` -> refs/remotes/remote/name; ``name`` -> refs/heads/name."""
        remote, sep, name = ref.rpartition(":")
        if sep:
            validate_ref(remote)
            return self.path / "refs" / "remotes" / remote / validate_ref(name)
        return self.path / "refs" / "heads" / validate_ref(name)

    def read_ref(self, ref: str) -> str | None:
        path = self._ref_path(ref)
        try:
            text = path.read_text().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if not ob.CHECKSUM_RE.match(text):
            raise CorruptionError(f"ref {ref} holds {text[:80]!r}, not a checksum")
        return text

    def set_ref(self, ref: str, csum: str | None) -> None:
        """Point ``ref`` at ``csum`` (None deletes it), atomically and durably."""
        path = self._ref_path(ref)
        if csum is None:
            if not path.exists():
                raise NotFoundError(f"ref {ref} does not exist")
            path.unlink()
            return
        ob.validate_checksum(csum)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, csum + "\n", fsync=self.fsync_enabled)

    def list_refs(self, prefix: str | None = None, *, remotes: bool = True) -> dict[str, str]:
        """All refs as ``{name: checksum}``; remote refs as ``remote:name``."""
        out: dict[str, str] = {}
        heads = self.path / "refs" / "heads"
        for path in sorted(_walk_files(heads)):
            out[str(path.relative_to(heads))] = path.read_text().strip()
        if remotes:
            rdir = self.path / "refs" / "remotes"
            for path in sorted(_walk_files(rdir)):
                rel = path.relative_to(rdir)
                out[f"{rel.parts[0]}:{'/'.join(rel.parts[1:])}"] = path.read_text().strip()
        if prefix:
            out = {k: v for k, v in out.items() if k == prefix or k.startswith(prefix + "/")
                   or k.startswith(prefix + ":")}
        return out

    def resolve_rev(self, rev: str, *, allow_missing: bool = False) -> str:
        """Checksum (or unique prefix), ``ref``, ``remote:ref``, with ``^`` suffixes."""
        base = rev.rstrip("^")
        ups = len(rev) - len(base)
        csum = self._resolve_base(base)
        if csum is None:
            if allow_missing:
                return ""
            raise NotFoundError(f"no such ref or commit: {base!r}",
                                "list refs with: atomicedge repo refs")
        for _ in range(ups):
            parent = self.load_commit(csum).parent
            if parent is None:
                raise NotFoundError(f"commit {csum} has no parent (in {rev!r})")
            csum = parent
        return csum

    def _resolve_base(self, rev: str) -> str | None:
        if ob.CHECKSUM_RE.match(rev):
            return rev
        if not rev or "/" in rev[:1]:
            raise UsageError(f"invalid revision {rev!r}")
        try:
            csum = self.read_ref(rev)
        except UsageError:
            csum = None
        if csum is None and ":" not in rev:
            matches = [v for k, v in self.list_refs().items() if k.endswith(":" + rev)]
            if len(matches) == 1:
                csum = matches[0]
        if csum is None and re.fullmatch(r"[0-9a-f]{4,63}", rev):
            cands = {c for c, t in self._objects_with_prefix(rev) if t == ObjectType.COMMIT}
            if len(cands) > 1:
                raise UsageError(f"ambiguous commit prefix {rev!r}")
            csum = cands.pop() if cands else None
        return csum

    def _objects_with_prefix(self, prefix: str) -> Iterator[tuple[str, ObjectType]]:
        d = self.objects / prefix[:2]
        if not d.is_dir():
            return
        for entry in os.scandir(d):
            name = prefix[:2] + entry.name
            if name.startswith(prefix) and entry.name.endswith(".commit"):
                yield name.split(".")[0], ObjectType.COMMIT


def _walk_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if not f.startswith("."):
                yield Path(dirpath) / f


_DIRTREE_CACHE: dict[tuple[str, str], DirTree] = {}


def _cached_dirtree(repo: Repo, csum: str) -> DirTree:
    """Dirtrees are immutable and content-addressed, so a small cache is always valid."""
    key = (str(repo.path), csum)
    tree = _DIRTREE_CACHE.get(key)
    if tree is None:
        tree = DirTree.decode(repo.read_metadata_bytes(csum, ObjectType.DIR_TREE))
        if len(_DIRTREE_CACHE) > 20000:
            _DIRTREE_CACHE.clear()
        _DIRTREE_CACHE[key] = tree
    return tree
