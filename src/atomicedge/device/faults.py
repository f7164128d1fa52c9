"""Fault points of the device operations (deploy, stage, finalize, rollback, cleanup).

The hook is shared with the repository code below (:mod:`atomicedge.ostree.faults`), so one
hook sees every step of an operation, the object writes of a pull included.  ``step`` is the
name the device code calls.
"""

from __future__ import annotations

from atomicedge.ostree.faults import Hook, point, set_hook

step = point

__all__ = ["Hook", "point", "set_hook", "step"]
