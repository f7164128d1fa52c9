"""Forked worker pools for the per-file hot paths (commit staging, checkout placement).

Processes, not threads: per-file work is Python bytecode between syscalls, which the GIL
would serialise on the 2-core machines we target. Workers are forked, so they inherit the
caller's state (set it in a module global before calling), and they die with the caller
(``PR_SET_PDEATHSIG``): an orphan would keep the repo lock's file description open.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _die_with_parent(parent: int) -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def workers() -> int:
    return os.cpu_count() or 1


def pool(max_workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of forked workers that die with the caller."""
    ctx = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(max_workers=max_workers or workers(), mp_context=ctx,
                               initializer=_die_with_parent, initargs=(os.getpid(),))


def fork_map(func: Callable[[T], R], batches: list[T]) -> list[R]:
    """``[func(b) for b in batches]`` in forked workers, results in order."""
    with pool() as workers_:
        return list(workers_.map(func, batches))
