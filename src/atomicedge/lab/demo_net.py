"""The "serve and update" part of ``make demo``: install over HTTP, then a delta update.

Serves the demo repository, pulls v1 into a fresh device-side repository with a live
progress bar, publishes v2 with a static delta (the composed v1 -> v2 update, or a small
demo v2 when there is no history), pulls the update, and prints what the server counted
for each step — the seed demo's numbers.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from atomicedge.delta import generate as delta
from atomicedge.ostree.objects import Commit, DirTree, FileHeader, ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server
from atomicedge.remote.pull import RichPullProgress, pull


def _largest_file(repo: Repo, tree: str, prefix: tuple[str, ...] = ()
                  ) -> tuple[int, tuple[str, ...], str] | None:
    best: tuple[int, tuple[str, ...], str] | None = None
    t = repo.load_dirtree(tree)
    for name, csum in t.files:
        h, data = repo.load_content(csum)
        if not h.is_symlink and (best is None or len(data) > best[0]):
            best = (len(data), (*prefix, name), csum)
    for name, sub, _meta in t.dirs:
        cand = _largest_file(repo, sub, (*prefix, name))
        if cand is not None and (best is None or cand[0] > best[0]):
            best = cand
    return best


def _replace(repo: Repo, tx: Any, tree: str, changes: dict[tuple[str, ...], str]) -> str:
    """A new dirtree equal to ``tree`` with each file path in ``changes`` set to its csum."""
    t = repo.load_dirtree(tree)
    files = dict(t.files)
    for path, csum in changes.items():
        if len(path) == 1:
            files[path[0]] = csum
    dirs = []
    for name, sub, meta in t.dirs:
        inner = {p[1:]: c for p, c in changes.items() if len(p) > 1 and p[0] == name}
        dirs.append((name, _replace(repo, tx, sub, inner) if inner else sub, meta))
    return tx.write_metadata(ObjectType.DIR_TREE,
                             DirTree(tuple(files.items()), tuple(dirs)).encode())


def publish_v2(repo: Repo, ref: str, now: int | None = None) -> tuple[str, str]:
    """Commit v2 on ``ref``: the largest file patched in place plus a release file."""
    v1 = repo.resolve_rev(ref)
    c1 = repo.load_commit(v1)
    found = _largest_file(repo, c1.root_tree)
    with repo.transaction() as tx:
        changes: dict[tuple[str, ...], str] = {}
        if found is not None:
            _size, path, csum = found
            h, data = repo.load_content(csum)
            patched = bytearray(data)
            patched[len(patched) // 2:len(patched) // 2 + 16] = b"atomicedge v2 !!"
            changes[path] = tx.write_content(h, bytes(patched))
        changes[("atomicedge-release",)] = tx.write_content(FileHeader(0, 0, 0o100644),
                                                            b"ATOMICEDGE_RELEASE=2\n")
        root = _replace(repo, tx, c1.root_tree, changes)
        meta = {k: v for k, v in c1.metadata.items() if k != "ostree.sizes"}  # now stale
        commit = Commit(root, c1.root_meta, meta, v1, "v2: demo update", "",
                        int(time.time()) if now is None else now)
        v2 = tx.write_metadata(ObjectType.COMMIT, commit.encode())
        tx.set_ref(ref, v2)
    return v1, v2


def _published_update(repo: Repo, ref: str) -> tuple[str, str] | None:
    """(v1, v2) when ``ref``'s head has its parent in the repo: the composed update."""
    v2 = repo.resolve_rev(ref)
    parent = repo.load_commit(v2).parent
    if parent is None or not repo.has_object(parent, ObjectType.COMMIT) \
            or repo.is_partial(parent):
        return None
    return parent, v2


def run(workdir: Path, repo_path: Path, ref: str, console: Any) -> dict[str, Any]:
    """Serve ``repo_path``, install v1 into a client, publish v2 + delta, update.

    With a history on ``ref`` (act 2 composed v1, then v2 with strace) that history is
    the update, as in the seed demo; a single commit gets a small demo v2 on top.
    """
    repo = Repo.open(repo_path)
    history = _published_update(repo, ref)
    pubsum.update(repo)
    target = Path(workdir) / "device-repo"
    shutil.rmtree(target, ignore_errors=True)
    client = Repo.init(target, "bare-user")
    out: dict[str, Any] = {}
    with Server(repo.path) as srv:
        console.print(f"[bold]serving[/bold] {repo.path} at {srv.url} (stats: {srv.url}/stats)")
        spec = f"{ref}@{history[0]}" if history else ref
        with RichPullProgress(console, "install") as bar:
            res = pull(client, srv.url, [spec], progress=bar, disable_static_deltas=True)
        out["install"] = {"files": srv.stats.files, "bytes": srv.stats.bytes,
                          "objects": res.stats.metadata_fetched + res.stats.content_fetched,
                          "seconds": round(res.stats.seconds, 2)}
        console.print(f"install: server sent {srv.stats.files} files, {srv.stats.bytes:,} "
                      f"bytes in {res.stats.seconds:.2f} s")
        v1, v2 = history or publish_v2(repo, ref)
        gen = delta.generate(repo, v1, v2)
        pubsum.update(repo)
        what = "the composed v2" if history else "a demo v2"
        console.print(f"published {what} {v2[:12]} with static delta {gen.name[:12]}…"
                      f"{gen.name[-12:]} ({gen.total_size:,} bytes, {gen.bsdiff} bsdiff)")
        files0, bytes0 = srv.stats.files, srv.stats.bytes
        with RichPullProgress(console, "update") as bar:
            res = pull(client, srv.url, [ref], progress=bar)
        out["update"] = {"files": srv.stats.files - files0, "bytes": srv.stats.bytes - bytes0,
                         "deltas": res.stats.deltas, "seconds": round(res.stats.seconds, 2)}
        console.print(f"update: server sent {out['update']['files']} files, "
                      f"{out['update']['bytes']:,} bytes (delta: {bool(res.stats.deltas)})")
        console.print(f"server totals: {srv.stats.files} files, {srv.stats.bytes:,} bytes")
    out.update(v1=v1, v2=v2, delta=gen.name, client=str(client.path),
               total={"files": srv.stats.files, "bytes": srv.stats.bytes})
    return out
