"""The one place that runs outside programs: log the command, bound its time, raise ToolError.

Each outside tool still has its own seam module (mmdebstrap.py, apt.py, custom/*.py, gpg.py)
that builds the argument list and interprets the output; this module gives them uniform
logging, a timeout (the whole process group is killed when it runs out), error text (the
tool's last stderr lines), the full stderr kept in :attr:`ToolError.stderr` and a hint.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from atomicedge.errors import ToolError

log = logging.getLogger("atomicedge.runner")

# generous: a tool that needs longer (mmdebstrap, apt-get update) says so at its call site
DEFAULT_TIMEOUT = 600.0
MISSING_HINT = "install it (deps/apt/*.txt lists the packages; `make setup` installs them)"

T = TypeVar("T", str, bytes)


def run(argv: Sequence[str], *, what: str, hint: str | None = None,
        input_text: str | None = None, env: Mapping[str, str] | None = None,
        check: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (text I/O); a non-zero exit or a timeout raises ToolError naming ``what``.

    ``timeout`` is in seconds (``None``: no limit); ``check=False`` returns a failed run
    instead of raising (a timeout still raises).
    """
    return _run(argv, what, hint, input_text, True, env, check, timeout, cwd)


def run_bytes(argv: Sequence[str], *, what: str, hint: str | None = None,
              data: bytes | None = None, env: Mapping[str, str] | None = None,
              check: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
              cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """:func:`run` for tools whose input or output is binary (gpg signatures)."""
    return _run(argv, what, hint, data, False, env, check, timeout, cwd)


def _run(argv: Sequence[str], what: str, hint: str | None, stdin: T | None, text: bool,
         env: Mapping[str, str] | None, check: bool, timeout: float | None,
         cwd: Path | None) -> subprocess.CompletedProcess[T]:
    argv = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(argv))
    try:
        # own process group: a timeout or an interrupt kills the tool and its children
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text,
                                env=dict(env) if env is not None else None, cwd=cwd,
                                start_new_session=True)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} is not installed", MISSING_HINT) from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        err = _leftover_stderr(proc)
        raise ToolError(f"{what}: {argv[0]} did not finish within {timeout:g} s and was killed",
                        hint or "see the output above; retry, or look for what it waits on",
                        stderr=err) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    if check and proc.returncode != 0:
        err_text = err if isinstance(err, str) else err.decode(errors="replace")
        out_text = out if isinstance(out, str) else out.decode(errors="replace")
        tail = [ln for ln in (err_text or out_text).splitlines() if ln.strip()][-6:]
        raise ToolError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail),
                        hint, stderr=err_text)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[T]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _leftover_stderr(proc: subprocess.Popen[T]) -> str:
    """What the killed tool wrote to stderr (not waiting forever on an escaped daemon)."""
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return ""
    if err is None:
        return ""
    return err if isinstance(err, str) else err.decode(errors="replace")
