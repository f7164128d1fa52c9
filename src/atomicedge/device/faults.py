"""Fault injection for the crash-safety suite.

Every file-system step of deploy/stage/finalize/cleanup calls :func:`step`.  When the
environment variable ``ATOMICEDGE_DEVICE_CRASH_AT=N`` is set, the N-th step ends the process
with ``os._exit(137)`` - the same as ``kill -9`` at that point: no ``finally``, no flush.
``ATOMICEDGE_DEVICE_STEPS=FILE`` appends the name of each step to FILE so a test can learn
how many steps an operation has.
"""

from __future__ import annotations

import os

_ENV_AT = "ATOMICEDGE_DEVICE_CRASH_AT"
_ENV_LOG = "ATOMICEDGE_DEVICE_STEPS"
_count = 0


def step(name: str) -> None:
    global _count
    _count += 1
    log = os.environ.get(_ENV_LOG)
    if log:
        with open(log, "a") as f:
            f.write(f"{_count} {name}\n")
    at = os.environ.get(_ENV_AT)
    if at and int(at) == _count:
        os._exit(137)


def reset() -> None:
    global _count
    _count = 0
