"""greenboot-compatible health checks, with the timeouts greenboot lacks.

Directory layout and semantics follow greenboot so existing scripts run unchanged:
``/usr/lib/greenboot/check/{required.d,wanted.d}`` then ``/etc/greenboot/check/...``;
``*.sh`` runs under bash, any other executable file runs directly; names sorted per
directory; the first failing *required* script stops the remaining required ones;
``DISABLED_HEALTHCHECKS=(a.sh b.sh)`` in ``greenboot.conf`` skips scripts by name.

Beyond greenboot: every check gets ``GREENBOOT_CHECK_TIMEOUT`` seconds (default 300) and the
whole run ``GREENBOOT_DEADLINE`` seconds (default 900).  A check that overruns is killed with
its whole process group and counts as failed, so a hung check can no longer block the
rollback forever (greenboot-rs#83).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from atomicedge.device.decision import (
    DEFAULT_MAX_BOOT_ATTEMPTS,
    GREENBOOT_CONF,
    HealthResult,
    conf_values,
    max_boot_attempts,
)

CHECK_DIRS = ("usr/lib/greenboot/check", "etc/greenboot/check")
HOOK_DIRS = ("usr/lib/greenboot", "etc/greenboot")
CONF = f"etc/{GREENBOOT_CONF}"


@dataclass(frozen=True)
class Config:
    max_boot_attempts: int = DEFAULT_MAX_BOOT_ATTEMPTS
    disabled: frozenset[str] = frozenset()
    check_timeout: float = 300.0
    deadline: float = 900.0


def parse_conf(text: str) -> Config:
    """Shell-style KEY=VALUE file; unknown keys ignored (the watchdog check reads its own)."""
    values = conf_values(text)
    disabled: list[str] = []
    raw = values.get("DISABLED_HEALTHCHECKS", "").strip()
    if raw.startswith("(") and raw.endswith(")"):
        disabled = shlex.split(raw[1:-1])
    return Config(
        max_boot_attempts=max_boot_attempts(text)[0],
        disabled=frozenset(disabled),
        check_timeout=float(_num(values, "GREENBOOT_CHECK_TIMEOUT", 300)),
        deadline=float(_num(values, "GREENBOOT_DEADLINE", 900)),
    )


def _num(values: dict[str, str], key: str, default: int) -> int:
    v = values.get(key, "").strip().strip('"').strip("'")
    try:
        return int(v) if v else default
    except ValueError:
        return default


def load_conf(root: Path) -> Config:
    try:
        return parse_conf((root / CONF).read_text())
    except FileNotFoundError:
        return Config()


def scripts_in(directory: Path, disabled: frozenset[str]) -> list[Path]:
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.iterdir(), key=lambda x: x.name):
        if p.name in disabled or not p.is_file():
            continue
        if p.suffix == ".sh" or os.access(p, os.X_OK):
            out.append(p)
    return out


@dataclass(frozen=True)
class CheckRun:
    path: Path
    rc: int | None            # None = killed after the timeout
    duration: float
    output: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def run_script(path: Path, timeout: float, env: dict[str, str] | None = None) -> CheckRun:
    """Run one script in its own process group; kill the group on timeout."""
    argv = ["bash", str(path)] if path.suffix == ".sh" else [str(path)]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        out, _ = proc.communicate(timeout=max(timeout, 0.01))
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        rc = None
    return CheckRun(path, rc, time.monotonic() - start,
                    out.decode("utf-8", "replace")[-4000:])


Logger = Callable[[str], None]


def run_checks(root: Path = Path("/"), conf: Config | None = None,
               log: Logger = print) -> HealthResult:
    """Run required then wanted checks of every check dir; returns what failed."""
    conf = conf or load_conf(root)
    deadline = time.monotonic() + conf.deadline
    required_failed: list[str] = []
    wanted_failed: list[str] = []
    timed_out: list[str] = []
    deadline_hit = False
    for kind in ("required.d", "wanted.d"):
        for base in CHECK_DIRS:
            for script in scripts_in(root / base / kind, conf.disabled):
                if kind == "required.d" and required_failed:
                    log(f"skipping {script.name}: a required check already failed")
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    deadline_hit = True
                    log(f"overall deadline of {conf.deadline:.0f}s reached before {script.name}")
                    break
                run = run_script(script, min(conf.check_timeout, left))
                _report(log, kind, run)
                if run.ok:
                    continue
                name = script.name
                if run.rc is None:
                    timed_out.append(name)
                    if time.monotonic() >= deadline:
                        deadline_hit = True
                (required_failed if kind == "required.d" else wanted_failed).append(name)
    return HealthResult(tuple(required_failed), tuple(wanted_failed), tuple(timed_out),
                        deadline_hit)


def _report(log: Logger, kind: str, run: CheckRun) -> None:
    for line in run.output.strip().splitlines()[-20:]:
        log(f"  {run.path.name}: {line}")
    if run.rc is None:
        log(f"{kind[:-2]} check {run.path.name} TIMED OUT after {run.duration:.1f}s")
    elif run.rc:
        log(f"{kind[:-2]} check {run.path.name} FAILED (exit {run.rc})")
    else:
        log(f"{kind[:-2]} check {run.path.name} passed ({run.duration:.2f}s)")


def run_hooks(root: Path, which: str, conf: Config | None = None, log: Logger = print,
              env: dict[str, str] | None = None) -> list[CheckRun]:
    """Run ``green.d`` or ``red.d`` scripts (failures are logged, never fatal)."""
    conf = conf or load_conf(root)
    runs = []
    for base in HOOK_DIRS:
        for script in scripts_in(root / base / which, conf.disabled):
            run = run_script(script, conf.check_timeout, env)
            runs.append(run)
            status = "ok" if run.ok else ("timed out" if run.rc is None else f"exit {run.rc}")
            log(f"{which} {script.name}: {status}")
    return runs
