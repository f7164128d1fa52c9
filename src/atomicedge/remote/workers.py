"""Forked workers for big pulls: content batches and static-delta parts on every core.

Verifying (inflate + SHA-256) and writing thousands of objects is Python between syscalls,
which the GIL would serialise; processes use both cores. The work comes in *groups*, each
with its own transaction (a batch of objects, one delta part): workers stage into the
group's directory and hand back what they staged, and the parent commits a group as soon
as all of it is in while the workers carry on with the next ones, so a syncfs never leaves
them idle. A group is still all-or-nothing, and an interrupted pull keeps every committed
group.

A worker finds its puller by key in a module global it inherited when it was forked, and
sets it up once with its own connections (never the parent's pooled sockets) and no UI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomicedge.ostree import forkpool
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.transaction import Transaction
from atomicedge.remote.http import FetchStats

if TYPE_CHECKING:
    from atomicedge.remote.pull import Puller

MAX_WORKERS = 2  # one pipelined connection each; the server needs a core too

# ``work(puller, tx, *args)``: a module-level function, so it pickles by name
Task = tuple[Callable[..., None], tuple[Any, ...]]

_PULLERS: dict[int, Puller] = {}  # by key; workers inherit this when they are forked
_READY: set[int] = set()  # keys already set up in this worker


@dataclass
class Report:
    """What one task did: the objects it staged and the counters it moved."""

    staged: list[tuple[tuple[str, ObjectType], str]]
    metadata: int
    content: int
    done: int
    wire: FetchStats


class Workers:
    """The forked worker pool of one pull (created on first use, closed with the pull)."""

    def __init__(self, puller: Puller) -> None:
        self.puller = puller
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            _PULLERS.pop(id(self.puller), None)

    def _submit(self, staging: str, task: Task) -> Future[Report]:
        if self._pool is None:
            _PULLERS[id(self.puller)] = self.puller  # before any worker forks
            self._pool = forkpool.pool(min(MAX_WORKERS, forkpool.workers()))
        work, args = task
        return self._pool.submit(_run, id(self.puller), staging, work, args)

    def stage(self, groups: list[list[Task]],
              group_done: Callable[[int], None] | None = None) -> None:
        """Run every task of every group; commit each group's transaction once it is in."""
        p = self.puller
        with contextlib.ExitStack() as stack:
            txs: list[Transaction] = []
            left: list[int] = []
            pending: dict[Future[Report], int] = {}
            for g, tasks in enumerate(groups):
                tx = stack.enter_context(p.repo.transaction())
                txs.append(tx)
                left.append(len(tasks))
                for task in tasks:
                    pending[self._submit(str(tx.staging), task)] = g
            try:
                for fut in as_completed(pending):
                    g = pending[fut]
                    report = fut.result()
                    txs[g].adopt(report.staged)
                    p.absorb(report)
                    left[g] -= 1
                    if not left[g]:
                        txs[g].commit()
                        if group_done is not None:
                            group_done(g)
                    p.tick()
            except BaseException:
                for f in pending:
                    f.cancel()
                wait(pending)  # no worker may still write into a staging dir we drop
                raise


def _puller(key: int) -> Puller:
    p = _PULLERS[key]
    if key not in _READY:
        separate = p.content is not p.fetcher
        p.fetcher = p.fetcher.clone()
        p.content = p.content.clone() if separate else p.fetcher
        p.progress = None
        _READY.add(key)
    return p


def _run(key: int, staging: str, work: Callable[..., None], args: tuple[Any, ...]) -> Report:
    p = _puller(key)
    st = p.stats
    before = (st.metadata_fetched, st.content_fetched, st.objects_done, p.fetch_stats())
    tx = Transaction.attach(p.repo, Path(staging))
    work(p, tx, *args)
    return Report(tx.staged(), st.metadata_fetched - before[0],
                  st.content_fetched - before[1], st.objects_done - before[2],
                  p.fetch_stats() - before[3])

