"""Traversals over commits: reachability (fsck, prune, pull, deltas) and path lookup."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from atomicedge.errors import NotFoundError
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo

ObjRef = tuple[str, ObjectType]


def reachable(repo: Repo, commit: str, *, depth: int = 0, include_commit: bool = True,
              missing_ok: bool = False) -> set[ObjRef]:
    """Objects reachable from ``commit`` (and ``depth`` parents; -1 = all history).

    ``missing_ok`` stops quietly at dirtrees that are not stored (partial commits)."""
    out: set[ObjRef] = set()
    csum: str | None = commit
    level = 0
    while csum is not None:
        if include_commit or level:
            out.add((csum, ObjectType.COMMIT))
        if not repo.has_object(csum, ObjectType.COMMIT):
            break
        c = repo.load_commit(csum)
        out.add((c.root_meta, ObjectType.DIR_META))
        _walk_tree(repo, c.root_tree, out, missing_ok)
        if depth >= 0 and level >= depth:
            break
        csum = c.parent
        level += 1
    return out


def _walk_tree(repo: Repo, tree_csum: str, out: set[ObjRef], missing_ok: bool) -> None:
    stack = [tree_csum]
    while stack:
        t = stack.pop()
        if (t, ObjectType.DIR_TREE) in out:
            continue
        out.add((t, ObjectType.DIR_TREE))
        if missing_ok and not repo.has_object(t, ObjectType.DIR_TREE):
            continue
        tree = repo.load_dirtree(t)
        for _name, c in tree.files:
            out.add((c, ObjectType.FILE))
        for _name, sub, meta in tree.dirs:
            out.add((meta, ObjectType.DIR_META))
            stack.append(sub)


@dataclass(frozen=True)
class Entry:
    """One path of a committed tree: a directory (tree+meta) or a file (content csum)."""

    path: str
    is_dir: bool
    csum: str
    meta: str = ""


def lookup(repo: Repo, commit: str, path: str) -> Entry:
    c = repo.load_commit(commit)
    entry = Entry("/", True, c.root_tree, c.root_meta)
    for part in [p for p in path.split("/") if p and p != "."]:
        if not entry.is_dir:
            raise NotFoundError(f"{path}: {entry.path} is not a directory")
        tree = repo.load_dirtree(entry.csum)
        sub = entry.path.rstrip("/") + "/" + part
        for name, t, m in tree.dirs:
            if name == part:
                entry = Entry(sub, True, t, m)
                break
        else:
            for name, f in tree.files:
                if name == part:
                    entry = Entry(sub, False, f)
                    break
            else:
                raise NotFoundError(f"no such file or directory in commit: {sub}")
    return entry


def iter_tree(repo: Repo, entry: Entry, recursive: bool = True) -> Iterator[Entry]:
    """Children of a directory entry in ostree's listing order: files, then directories."""
    tree = repo.load_dirtree(entry.csum)
    base = entry.path.rstrip("/")
    for n, f in tree.files:
        yield Entry(f"{base}/{n}", False, f)
    for n, t, m in tree.dirs:
        sub = Entry(f"{base}/{n}", True, t, m)
        yield sub
        if recursive:
            yield from iter_tree(repo, sub, True)
