"""The one place that runs outside programs for the composer: log the command, raise ToolError.

Each outside tool still has its own seam module (mmdebstrap.py, apt.py, custom/*.py) that builds
the argument list and interprets the output; this helper only gives them uniform logging, error
text (the tool's last stderr lines) and a hint.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from atomicedge.errors import ToolError

log = logging.getLogger("atomicedge.compose")


def run(argv: Sequence[str], *, what: str, hint: str | None = None,
        input_text: str | None = None, env: Mapping[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; on a non-zero exit raise ToolError naming ``what`` with stderr's tail."""
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                              env=dict(env) if env is not None else None, check=False)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} is not installed",
                        "run `make setup` (deps/apt/compose.txt lists the packages)") from None
    if check and proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-6:]
        raise ToolError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail),
                        hint, stderr=proc.stderr)
    return proc
