"""Read-only views of a repository: log, show, ls, cat, diff — as values and as ostree's text.

The text renderers reproduce ``ostree``'s layout so scripts that parse it keep working.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atomicedge.errors import UsageError
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import Commit
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import Entry, iter_tree, lookup


def history(repo: Repo, rev: str) -> Iterator[tuple[str, Commit]]:
    """The commit and its ancestors, newest first, stopping where history was not pulled."""
    csum: str | None = repo.resolve_rev(rev)
    while csum is not None:
        from atomicedge.ostree.objects import ObjectType
        if not repo.has_object(csum, ObjectType.COMMIT):
            return
        commit = repo.load_commit(csum)
        yield csum, commit
        csum = commit.parent


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def format_commit(csum: str, c: Commit) -> str:
    lines = [f"commit {csum}"]
    if c.parent:
        lines.append(f"Parent:  {c.parent}")
    lines.append(f"ContentChecksum:  {c.content_checksum}")
    lines.append(f"Date:  {_date(c.timestamp)}")
    if c.version:
        lines.append(f"Version: {c.version}")
    lines.append("")
    if c.subject:
        lines.append(f"    {c.subject}")
        lines.append("")
    if c.body:
        lines.extend(f"    {line}" for line in c.body.splitlines())
        lines.append("")
    return "\n".join(lines) + "\n"


def plain(value: Any) -> Any:
    """Variant trees -> JSON-friendly values (bytes become hex)."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def commit_json(repo: Repo, csum: str, c: Commit) -> dict[str, Any]:
    meta = {k: plain(v) for k, v in c.metadata.items() if k != "ostree.sizes"}
    if "ostree.sizes" in c.metadata:
        meta["ostree.sizes"] = f"<{len(c.metadata['ostree.sizes'].value)} entries>"
    detached = repo.read_detached_metadata(csum)
    return {
        "checksum": csum, "parent": c.parent, "subject": c.subject, "body": c.body,
        "timestamp": c.timestamp, "date": _date(c.timestamp), "version": c.version,
        "root_tree": c.root_tree, "root_meta": c.root_meta,
        "content_checksum": c.content_checksum, "metadata": meta,
        "signed": bool(detached and any(k.startswith(("ostree.gpgsigs", "ostree.sign."))
                                        for k in detached)),
        "partial": repo.is_partial(csum),
    }


@dataclass(frozen=True)
class LsEntry:
    path: str
    kind: str  # "d", "-", "l"
    mode: int
    uid: int
    gid: int
    size: int
    checksum: str
    target: str = ""

    def render(self, with_checksum: bool = False) -> str:
        mid = f" {self.checksum}" if with_checksum else ""
        tail = f" -> {self.target}" if self.kind == "l" else ""
        return (f"{self.kind}{stat.S_IMODE(self.mode):05o} {self.uid} {self.gid} "
                f"{self.size:6d}{mid} {self.path}{tail}")


def ls_entry(repo: Repo, e: Entry) -> LsEntry:
    if e.is_dir:
        m = repo.load_dirmeta(e.meta)
        return LsEntry(e.path, "d", m.mode, m.uid, m.gid, 0, e.csum)
    h, content = repo.load_content(e.csum)
    if h.is_symlink:
        return LsEntry(e.path, "l", h.mode, h.uid, h.gid, 0, e.csum, h.symlink_target)
    return LsEntry(e.path, "-", h.mode, h.uid, h.gid, len(content), e.csum)


def ls(repo: Repo, rev: str, path: str = "/", recursive: bool = False) -> Iterator[LsEntry]:
    csum = repo.resolve_rev(rev)
    top = lookup(repo, csum, path)
    yield ls_entry(repo, top)
    if top.is_dir:
        for e in iter_tree(repo, top, recursive):
            yield ls_entry(repo, e)


def cat(repo: Repo, rev: str, path: str) -> bytes:
    entry = lookup(repo, repo.resolve_rev(rev), path)
    if entry.is_dir:
        raise UsageError(f"{path} is a directory", "use 'atomicedge repo ls' to list it")
    h, content = repo.load_content(entry.csum)
    if h.is_symlink:
        raise UsageError(f"{path} is a symlink to {h.symlink_target}")
    return content


@dataclass
class TreeDiff:
    modified: list[str]
    removed: list[str]
    added: list[str]

    def render(self) -> str:
        return "".join(f"{letter}    {p}\n" for letter, paths in
                       (("M", self.modified), ("D", self.removed), ("A", self.added))
                       for p in paths)


def diff(repo: Repo, rev_a: str, rev_b: str) -> TreeDiff:
    a = repo.load_commit(repo.resolve_rev(rev_a))
    b = repo.load_commit(repo.resolve_rev(rev_b))
    out = TreeDiff([], [], [])
    _diff_dirs(repo, "", (a.root_tree, a.root_meta), (b.root_tree, b.root_meta), out)
    return out


def _diff_dirs(repo: Repo, base: str, a: tuple[str, str], b: tuple[str, str],
               out: TreeDiff) -> None:
    if a == b:
        return
    ta, tb = repo.load_dirtree(a[0]), repo.load_dirtree(b[0])
    fa, fb = dict(ta.files), dict(tb.files)
    da = {n: (t, m) for n, t, m in ta.dirs}
    db = {n: (t, m) for n, t, m in tb.dirs}
    for name, csum in fa.items():
        path = f"{base}/{name}"
        if name in fb:
            if fb[name] != csum:
                out.modified.append(path)
        else:
            out.removed.append(path)
    for name, pair in da.items():
        path = f"{base}/{name}"
        if name in db:
            if db[name][1] != pair[1]:
                out.modified.append(path)
            _diff_dirs(repo, path, pair, db[name], out)
        else:
            out.removed.append(path)
    for name in fb:
        if name not in fa:
            out.added.append(f"{base}/{name}")
    for name in db:
        if name not in da:
            out.added.append(f"{base}/{name}")
