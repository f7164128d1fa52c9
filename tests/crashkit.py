"""Verified kill points for the crash-safety proofs.

An operation runs in a forked child (forked from the test process: no interpreter start-up,
the child starts inside the operation's first line).  The child installs a hook on the fault
points (:mod:`atomicedge.ostree.faults`) that reports every step it reaches to the parent
through a pipe.  At the chosen step the child stops inside the hook and the parent, on reading
that report, sends ``SIGKILL`` to the child's process group (the child and any worker it
forked).  A kill counts only when both hold:

* the child reported the chosen step (so it was inside the operation, not starting up), and
* it died of ``SIGKILL`` (so the operation did not finish - a finished run reports ``done``
  and exits 0, and is returned as ``None``: never counted).

Points are numbered in the child's main process only, so the N-th point of an operation is
the same step on every run.  Forked pool workers inherit the hook: :func:`kill_at_nth` stops
whichever process first reaches its n-th point of a given name (a worker staging files, say).
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from atomicedge.ostree import faults

DEADLINE = 600.0  # seconds for one child run; generous, a loaded 2-core machine is slow


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A directory for the many copies a proof makes: on a tmpfs when there is one.  The
    proofs are about a process dying mid-operation (the page cache survives a SIGKILL on any
    file system); hundreds of copies and deletions on a loaded disk would cost more than the
    proofs themselves.  Removed afterwards."""
    shm = Path("/dev/shm")
    on = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix=f"atomicedge-{prefix}-", dir=on))
    try:
        yield d
    finally:
        shutil.rmtree(d)


def copy_tree(src: Path, dest: Path) -> Path:
    """A fresh copy of ``src`` at ``dest`` (hardlinks, modes and owners kept: ``cp -a``)."""
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


@dataclass(frozen=True)
class Kill:
    """A verified kill: the operation reached ``name`` and died there.  ``points`` are the
    main process's points up to then (the last one is the kill point unless a worker was
    stopped)."""

    name: str
    points: tuple[str, ...]
    in_worker: bool = False


@dataclass(frozen=True)
class _Stop:
    index: int | None = None  # the index-th point of the main process
    name: str | None = None   # or the nth point called name, in any process
    nth: int = 0


class ChildError(AssertionError):
    """The operation failed in the child (an exception, or an unexpected exit)."""


def record(op: Callable[[], object]) -> list[str]:
    """Run ``op`` to completion in a forked child; the names of its fault points, in order."""
    points, hit = _run(op, _Stop())
    assert hit is None, "the recording run did not finish"
    return points


def kill_at(op: Callable[[], object], index: int) -> Kill | None:
    """Run ``op`` in a forked child and SIGKILL it at its ``index``-th fault point (1-based).

    Returns the verified :class:`Kill`, or None when ``op`` finished before reaching that
    point (not a kill).
    """
    points, hit = _run(op, _Stop(index=index))
    return None if hit is None else Kill(hit[0], tuple(points), hit[1])


def kill_at_nth(op: Callable[[], object], name: str, nth: int) -> Kill | None:
    """SIGKILL ``op`` when one of its processes (the main one or a forked worker) reaches its
    ``nth`` point called ``name``.  None if ``op`` finished first."""
    points, hit = _run(op, _Stop(name=name, nth=nth))
    return None if hit is None else Kill(hit[0], tuple(points), hit[1])


def _run(op: Callable[[], object], stop: _Stop) -> tuple[list[str], tuple[str, bool] | None]:
    """(main points reported, (point, in a worker) where killed or None if it finished).
    Raises if the child fails or does not die of the SIGKILL."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()  # never written: the stopped child blocks reading it
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        os.close(go_w)
        _child(op, w, go_r, stop)
    os.close(w)
    os.close(go_r)
    child = _Child(pid)
    try:
        # the child makes itself a group leader too; whichever call comes second may fail
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpgid(pid, pid)
        return _watch(child, r)
    finally:
        os.close(r)
        os.close(go_w)
        child.kill()


def _child(op: Callable[[], object], w: int, go_r: int, stop: _Stop) -> None:
    code = 1
    try:
        gc.disable()  # short-lived: a collection would copy-on-write the whole inherited heap
        os.setpgid(0, 0)
        faults.set_hook(_Hook(w, go_r, stop))
        op()
        _send(w, "D")
        code = 0
    except BaseException:
        with contextlib.suppress(OSError):
            _send(w, "E " + traceback.format_exc().replace("\n", "\\n"))
    finally:
        os._exit(code)


class _Hook:
    """The child's fault hook: report each main-process point; stop at the chosen one."""

    def __init__(self, w: int, go_r: int, stop: _Stop) -> None:
        self.w, self.go_r, self.stop = w, go_r, stop
        self.main_pid = os.getpid()
        self.pid = 0

    def __call__(self, name: str) -> None:
        if self.pid != os.getpid():  # first point in this process (a forked worker: afresh)
            self.pid = os.getpid()
            self.lock = threading.Lock()
            self.count = 0
            self.names: Counter[str] = Counter()
        with self.lock:
            main = self.pid == self.main_pid
            self.names[name] += 1
            if main:
                self.count += 1
            if ((main and self.count == self.stop.index)
                    or (name == self.stop.name and self.names[name] == self.stop.nth)):
                _send(self.w, f"H {int(not main)} {name}")
                os.read(self.go_r, 1)  # the parent kills us here; EOF = the parent is gone
                os._exit(3)
            if main:
                _send(self.w, f"P {self.count} {name}")


def _send(fd: int, line: str) -> None:
    data = (line + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


class _Child:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    def wait(self) -> int:
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        return self.status

    def kill(self) -> int:
        """SIGKILL the child's process group (unless reaped already) and reap it."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        return self.wait()


def _watch(child: _Child, r: int) -> tuple[list[str], tuple[str, bool] | None]:
    points: list[str] = []
    buf = b""
    deadline = time.monotonic() + DEADLINE
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            raise ChildError(f"the operation did not reach its kill point nor finish "
                             f"within {DEADLINE:.0f} s (last points: {points[-3:]})")
        chunk = os.read(r, 65536)
        if not chunk:
            raise ChildError(f"the operation's process ended without a report "
                             f"(wait status {child.wait()}, after points {points[-3:]})")
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            kind, _, rest = raw.decode().partition(" ")
            if kind == "P":
                n, _, name = rest.partition(" ")
                points.append(name)
                assert int(n) == len(points)
            elif kind == "H":
                worker, _, name = rest.partition(" ")
                if worker == "0":
                    points.append(name)
                status = child.kill()
                if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                    raise ChildError(f"child stopped at {name} was not ended by SIGKILL "
                                     f"(wait status {status})")
                return points, (name, worker == "1")
            elif kind == "D":
                status = child.wait()
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                    raise ChildError(f"the operation finished but exited with {status}")
                return points, None
            elif kind == "E":
                child.wait()
                raise ChildError("the operation failed in the child:\n"
                                 + rest.replace("\\n", "\n"))
