"""A commit and its tree into the local repo: the signature check first, then every
missing object, in committed batches.

``state/COMMIT.commitpartial`` exists from before the commit object lands until its whole
tree is present, so a crash never leaves a commit that looks complete but is not; objects
are committed in batches, so an interrupted pull keeps every finished batch and the next
pull skips what it has (``resume`` costs one ``stat`` per object, no download).
"""

from __future__ import annotations

import os
from typing import Any

from atomicedge.errors import CorruptionError, FormatError
from atomicedge.ostree import forkpool
from atomicedge.ostree import objects as ob
from atomicedge.ostree.objects import Commit, DirTree, ObjectType
from atomicedge.remote.context import ObjRef, PullContext
from atomicedge.remote.objfetch import fetch_chunk, fetch_threaded
from atomicedge.remote.workers import Workers
from atomicedge.trust import sign

BATCH = int(os.environ.get("ATOMICEDGE_PULL_BATCH", "") or 1000)  # objects per commit
# a pull missing this many objects uses forked workers (see workers)
FORK_MIN = int(os.environ.get("ATOMICEDGE_PULL_FORK_MIN", "") or 256)
FORK_CHUNK = 128  # objects per worker task: the unit of progress reports
BULK_CHECK = 2000  # above this many candidates, list objects/ instead of stat-ing each


class TreePuller:
    """Stores verified commits and fetches their trees, for one pull (``ctx``)."""

    def __init__(self, ctx: PullContext) -> None:
        self.ctx = ctx
        self.workers = Workers(ctx)

    def close(self) -> None:
        self.workers.close()

    # -- commits -----------------------------------------------------------------------

    def store_commit(self, csum: str, data: bytes, meta: dict[str, Any] | None,
                     ref: str | None) -> Commit:
        """Verify signature and ref binding, then write the commit marked partial."""
        ctx = self.ctx
        commit = Commit.decode(data)
        sign.verify(f"commit {csum}", data, meta, ctx.policy)
        if ref is not None:
            bound = commit.meta_value("ostree.ref-binding")
            if bound is not None and ref not in bound:
                raise CorruptionError(f"commit {csum} is bound to {bound}, not to {ref}",
                                      "the server is offering a commit of another branch")
        self.mark_partial(csum)
        if meta is not None:
            ctx.repo.write_detached_metadata(csum, meta)
        with ctx.repo.transaction() as tx:
            tx.write_metadata(ObjectType.COMMIT, data, expected=csum)
        ctx.count(metadata=1)
        self.note_sizes(commit)
        return commit

    def note_sizes(self, commit: Commit) -> None:
        """Remember ``ostree.sizes`` (archived sizes) to cap each download exactly."""
        v = commit.metadata.get("ostree.sizes")
        if v is None or v.type != "aay":
            return
        for entry in v.value:
            e = bytes(entry)
            if len(e) < 34:
                continue
            try:
                archived, _pos = ob.decode_varint(e, 32)
            except FormatError:
                continue
            self.ctx.sizes[e[:32].hex()] = archived

    def mark_partial(self, csum: str) -> None:
        path = self.ctx.repo.path / "state" / f"{csum}.commitpartial"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_bytes(b"")

    def clear_partial(self, csum: str) -> None:
        (self.ctx.repo.path / "state" / f"{csum}.commitpartial").unlink(missing_ok=True)

    # -- trees -------------------------------------------------------------------------

    def pull_tree(self, csum: str) -> None:
        """Fetch every missing object of commit ``csum``'s tree, then clear its partial.

        Metadata goes level by level (a dirtree names the next level) into one transaction,
        walking the fetched dirtrees from memory: a commit per level would cost a syncfs
        each. Content then goes in committed batches, so an interrupted pull resumes.
        """
        ctx = self.ctx
        commit = ctx.repo.load_commit(csum)
        ctx.stats.phase = "metadata"
        frontier: list[ObjRef] = [(commit.root_tree, ObjectType.DIR_TREE),
                                  (commit.root_meta, ObjectType.DIR_META)]
        seen: set[ObjRef] = set(frontier)
        files: set[str] = set()
        fetched: dict[str, bytes] = {}  # this level's dirtrees, as they arrive
        ctx.dirtrees = fetched
        try:
            with ctx.repo.transaction() as tx:
                while frontier:
                    fetch_threaded(ctx, tx, self.missing(frontier))
                    nxt: list[ObjRef] = []
                    for c, t in frontier:
                        if t != ObjectType.DIR_TREE:
                            continue
                        fresh = fetched.pop(c, None)
                        tree = DirTree.decode(fresh) if fresh else ctx.repo.load_dirtree(c)
                        files.update(f for _n, f in tree.files)
                        for _n, sub, meta in tree.dirs:
                            for o in ((sub, ObjectType.DIR_TREE), (meta, ObjectType.DIR_META)):
                                if o not in seen:
                                    seen.add(o)
                                    nxt.append(o)
                    frontier = nxt
        finally:
            ctx.dirtrees = None
        ctx.stats.phase = "content"
        self.fetch_objects([(f, ObjectType.FILE) for f in sorted(files)])
        self.clear_partial(csum)
        ctx.tick(force=True)

    def missing(self, objs: list[ObjRef]) -> list[ObjRef]:
        """The ones among ``objs`` this repo lacks (counted as done if present)."""
        repo = self.ctx.repo
        self.ctx.stats.objects_total += len(objs)
        if len(objs) > BULK_CHECK:  # one listing beats thousands of stat()s
            have = set(repo.iter_objects())
            missing = [o for o in objs if o not in have]
        else:
            missing = [o for o in objs if not repo.has_object(*o)]
        self.ctx.count(done=len(objs) - len(missing))
        return missing

    def fetch_objects(self, objs: list[ObjRef]) -> None:
        """Download and store the missing ones among ``objs``, in committed batches.

        A failure stops the batch's other workers at their next object; the batch is then
        not committed, but every earlier batch is, so a re-run resumes from there.
        """
        missing = self.missing(objs)
        batches = [missing[i:i + BATCH] for i in range(0, len(missing), BATCH)]
        if len(missing) >= FORK_MIN and forkpool.workers() > 1:
            self.workers.stage([[(fetch_chunk, (batch[i:i + FORK_CHUNK],))
                                 for i in range(0, len(batch), FORK_CHUNK)]
                                for batch in batches])
            return
        for batch in batches:
            with self.ctx.repo.transaction() as tx:
                fetch_threaded(self.ctx, tx, batch)
