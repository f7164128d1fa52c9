"""Forked workers for big pulls: content batches and static-delta parts on every core.

Verifying (inflate + SHA-256) and writing thousands of objects is Python between syscalls,
which the GIL would serialise; processes use both cores. The work comes in *groups*, each
with its own transaction (a batch of objects, one delta part): workers stage into the
group's directory and hand back what they staged, and the parent commits a group as soon
as all of it is in while the workers carry on with the next ones, so a syncfs never leaves
them idle. A group is still all-or-nothing, and an interrupted pull keeps every committed
group.

A task is ``work(ctx, tx, *args)``: a module-level function (it pickles by name) run on the
pull's :class:`~atomicedge.remote.context.PullContext`. A worker finds that context by key
in a module global it inherited when it was forked, and detaches it once (connections of
its own, no UI).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge.ostree import forkpool
from atomicedge.ostree.transaction import Transaction
from atomicedge.remote.context import ObjRef, PullContext
from atomicedge.remote.http import FetchStats

MAX_WORKERS = 2  # one pipelined connection each; the server needs a core too

# ``work(ctx, tx, *args)``: a module-level function, so it pickles by name
Task = tuple[Callable[..., None], tuple[Any, ...]]

_CONTEXTS: dict[int, PullContext] = {}  # by key; workers inherit this when they are forked
_READY: set[int] = set()  # keys already detached in this worker


@dataclass
class Report:
    """What one task did: the objects it staged and the counters it moved."""

    staged: list[tuple[ObjRef, str]]
    metadata: int
    content: int
    done: int
    wire: FetchStats


class Workers:
    """The forked worker pool of one pull (created on first use, closed with the pull)."""

    def __init__(self, ctx: PullContext) -> None:
        self.ctx = ctx
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            _CONTEXTS.pop(id(self.ctx), None)

    def _submit(self, staging: str, task: Task) -> Future[Report]:
        if self._pool is None:
            _CONTEXTS[id(self.ctx)] = self.ctx  # before any worker forks
            self._pool = forkpool.pool(min(MAX_WORKERS, forkpool.workers()))
        work, args = task
        return self._pool.submit(_run, id(self.ctx), staging, work, args)

    def stage(self, groups: list[list[Task]],
              group_done: Callable[[int], None] | None = None) -> None:
        """Run every task of every group; commit each group's transaction once it is in."""
        ctx = self.ctx
        with contextlib.ExitStack() as stack:
            txs: list[Transaction] = []
            left: list[int] = []
            pending: dict[Future[Report], int] = {}
            for g, tasks in enumerate(groups):
                tx = stack.enter_context(ctx.repo.transaction())
                txs.append(tx)
                left.append(len(tasks))
                for task in tasks:
                    pending[self._submit(str(tx.staging), task)] = g
            try:
                for fut in as_completed(pending):
                    g = pending[fut]
                    report = fut.result()
                    txs[g].adopt(report.staged)
                    ctx.count(metadata=report.metadata, content=report.content,
                              done=report.done)
                    ctx.fetcher.absorb(report.wire)
                    left[g] -= 1
                    if not left[g]:
                        txs[g].commit()
                        if group_done is not None:
                            group_done(g)
                    ctx.tick()
            except BaseException:
                for f in pending:
                    f.cancel()
                wait(pending)  # no worker may still write into a staging dir we drop
                raise


def _context(key: int) -> PullContext:
    ctx = _CONTEXTS[key]
    if key not in _READY:
        ctx.detach()
        _READY.add(key)
    return ctx


def _run(key: int, staging: str, work: Callable[..., None], args: tuple[Any, ...]) -> Report:
    ctx = _context(key)
    st = ctx.stats
    before = (st.metadata_fetched, st.content_fetched, st.objects_done, ctx.fetch_stats())
    tx = Transaction.attach(ctx.repo, Path(staging))
    work(ctx, tx, *args)
    return Report(tx.staged(), st.metadata_fetched - before[0],
                  st.content_fetched - before[1], st.objects_done - before[2],
                  ctx.fetch_stats() - before[3])
