"""An OSTree-format repository on disk: opening, object reads, refs, revisions, transactions.

The on-disk layout is libostree's (:mod:`layout`), so the real ``ostree`` and atomicedge can
take turns on the same repository. Writes happen in a :class:`Transaction`; objects only
appear under ``objects/`` complete, and refs move last.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atomicedge.errors import CorruptionError, FormatError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.ostree import objects as ob
from atomicedge.ostree.content import OSTREEMETA, load_content, read_xattrs
from atomicedge.ostree.keyfile import KeyFile
from atomicedge.ostree.layout import (
    MODES,
    REF_COMPONENT,
    RepoLayout,
    normalize_mode,
    validate_ref,
)
from atomicedge.ostree.objects import Commit, DirMeta, DirTree, FileHeader, ObjectType
from atomicedge.ostree.transaction import Transaction

__all__ = ["MAX_METADATA_SIZE", "MODES", "OSTREEMETA", "REF_COMPONENT", "Repo",
           "normalize_mode", "read_xattrs", "validate_ref"]

MAX_METADATA_SIZE = 128 * 1024 * 1024


class Repo(RepoLayout):
    """Handle on one repository directory."""

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

    def transaction(self) -> Transaction:
        return Transaction(self)

    # -- objects -----------------------------------------------------------------------

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

    def load_content(self, csum: str) -> tuple[FileHeader, bytes]:
        """Header and full content of a file object, whatever the repo mode."""
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
