"""Integrity check and garbage collection.

``fsck`` re-hashes every loose object (metadata: the bytes; content: the canonical stream, so
archive payloads are inflated) and walks every commit for missing objects. ``prune`` deletes
what no ref reaches, under the exclusive repo lock so no concurrent writer loses objects.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from atomicedge.errors import AtomicEdgeError
from atomicedge.ostree import objects as ob
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import ObjRef, reachable


@dataclass
class FsckReport:
    commits: int = 0
    objects: int = 0
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # csum, type, why
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # csum, type, needed by
    partial: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "commits": self.commits, "objects": self.objects,
            "corrupt": [{"checksum": c, "type": t, "error": w} for c, t, w in self.corrupt],
            "missing": [{"checksum": c, "type": t, "needed_by": n} for c, t, n in self.missing],
            "partial_commits": self.partial,
        }


def verify_object(repo: Repo, csum: str, objtype: ObjectType) -> str | None:
    """None if the stored object is intact, else why not."""
    try:
        if objtype == ObjectType.FILE:
            header, content = repo.load_content(csum)
            header.validate()
            actual = ob.content_checksum(header, content)
        else:
            data = repo.read_metadata_bytes(csum, objtype)
            if objtype in (ObjectType.COMMIT_META, ObjectType.TOMBSTONE_COMMIT):
                ob.decode_metadata_dict(data)
                return None
            actual = hashlib.sha256(data).hexdigest()
            if actual == csum:
                ob.decode_metadata_object(objtype, data)
    except (AtomicEdgeError, OSError, ValueError) as exc:
        return str(exc)
    if actual != csum:
        return f"checksum mismatch: content hashes to {actual}"
    return None


def fsck(repo: Repo, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    report = FsckReport()
    with repo.lock(exclusive=False):
        loose = list(repo.iter_objects())
        present = set(loose)
        report.objects = len(loose)
        done = 0
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            for (csum, objtype), why in zip(loose, pool.map(lambda o: verify_object(repo, *o),
                                                            loose, chunksize=64), strict=False):
                done += 1
                if why:
                    report.corrupt.append((csum, objtype.ext, why))
                if progress and done % 512 == 0:
                    progress(done, len(loose))
        bad = {c for c, _t, _w in report.corrupt}
        for csum, objtype in loose:
            if objtype != ObjectType.COMMIT or csum in bad:
                continue
            report.commits += 1
            if repo.is_partial(csum):
                report.partial.append(csum)
                continue
            _check_reachable(repo, csum, present, bad, report)
        for ref, csum in repo.list_refs().items():
            if (csum, ObjectType.COMMIT) not in present:
                report.missing.append((csum, "commit", f"ref {ref}"))
    return report


def _check_reachable(repo: Repo, csum: str, present: set[ObjRef], bad: set[str],
                     report: FsckReport) -> None:
    try:
        objs = _reachable_tolerant(repo, csum, present, bad)
    except AtomicEdgeError as exc:
        report.corrupt.append((csum, "commit", f"tree unreadable: {exc}"))
        return
    for o_csum, o_type in sorted(objs):
        if (o_csum, o_type) not in present:
            report.missing.append((o_csum, o_type.ext, f"commit {csum}"))


def _reachable_tolerant(repo: Repo, csum: str, present: set[ObjRef],
                        bad: set[str]) -> set[ObjRef]:
    """Objects of one commit (no parents); stops descending at missing or corrupt dirtrees."""
    out: set[ObjRef] = set()
    c = repo.load_commit(csum)
    out.add((c.root_meta, ObjectType.DIR_META))
    stack = [c.root_tree]
    while stack:
        t = stack.pop()
        if (t, ObjectType.DIR_TREE) in out:
            continue
        out.add((t, ObjectType.DIR_TREE))
        if (t, ObjectType.DIR_TREE) not in present or t in bad:
            continue
        tree = repo.load_dirtree(t)
        out.update((f, ObjectType.FILE) for _n, f in tree.files)
        for _n, sub, meta in tree.dirs:
            out.add((meta, ObjectType.DIR_META))
            stack.append(sub)
    return out


@dataclass
class PruneResult:
    total: int
    deleted: int
    freed_bytes: int


def prune(repo: Repo, *, refs_only: bool = True, dry_run: bool = False,
          extra_roots: tuple[str, ...] = ()) -> PruneResult:
    """Delete every object not reachable (full history) from a ref or ``extra_roots``."""
    with repo.lock(exclusive=True):
        keep: set[ObjRef] = set()
        roots = set(repo.list_refs().values()) | set(extra_roots)
        if not refs_only:
            roots |= {c for c, t in repo.iter_objects() if t == ObjectType.COMMIT}
        for root in roots:
            keep |= reachable(repo, root, depth=-1, missing_ok=True)
        kept_commits = {c for c, t in keep if t == ObjectType.COMMIT}
        deleted = freed = total = 0
        for csum, objtype in list(repo.iter_objects()):
            total += 1
            if objtype == ObjectType.COMMIT_META and csum in kept_commits:
                continue
            if (csum, objtype) in keep:
                continue
            path = repo.object_path(csum, objtype)
            freed += os.lstat(path).st_size
            deleted += 1
            if not dry_run:
                path.unlink()
                if objtype == ObjectType.COMMIT:
                    (repo.path / "state" / f"{csum}.commitpartial").unlink(missing_ok=True)
    return PruneResult(total, deleted, freed)
