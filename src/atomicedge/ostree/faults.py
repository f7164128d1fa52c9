"""Named fault points for the crash-safety proofs.

Every file-system step that matters (an object staged or renamed into ``objects/``, a ref
written, a deployment directory renamed, the boot-loader symlink swapped, ...) calls
:func:`point` with a short name.  With no hook set that is one global lookup.  A test sets a
hook (:func:`set_hook`) in a forked child: the hook reports the step it reached to the parent,
which ``SIGKILL``s the child right there - exactly what a power cut does to the process, and
proof that the kill interrupted the operation (see ``tests/crashkit.py``).

This module sits in the lowest layer that has file-system steps (``ostree``), so the device
code above uses the same hook (:mod:`atomicedge.device.faults` re-exports it).
"""

from __future__ import annotations

from collections.abc import Callable

Hook = Callable[[str], None]
_hook: Hook | None = None


def point(name: str) -> None:
    """A fault point: the operation has just completed the step ``name``."""
    if _hook is not None:
        _hook(name)


def set_hook(hook: Hook | None) -> Hook | None:
    """Install ``hook`` (None removes it); returns the previous one."""
    global _hook
    old, _hook = _hook, hook
    return old
