"""The update agent: ``/etc/atomicedge/agent.toml`` + one tick (``agent --once``).

Config keys: ``policy`` (none|check|stage|apply), ``schedule`` (systemd OnCalendar syntax,
validated by ``systemd-analyze calendar`` when present), ``splay`` (RandomizedDelaySec=),
``[window] days/start/length_minutes`` (UTC) for applying, ``[apply] schedule`` (when the
apply timer - the seed demo's ``applyupdate`` - reboots into a staged update).  The agent timer
runs the tick (:func:`tick`), the apply timer :func:`apply_tick`; the generator turns the
config into timer drop-ins.  The decision is
:func:`atomicedge.device.decision.decide_agent`; a commit in the denylist (rolled back by the
health check) is never staged automatically.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge import runner
from atomicedge.device import deploy as dp
from atomicedge.device import ops
from atomicedge.device.decision import (
    POLICIES,
    Action,
    AgentDecision,
    AgentFacts,
    Window,
    decide_agent,
    parse_window,
)
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import FormatError
from atomicedge.fsutil import atomic_write

CONFIG = Path("/etc/atomicedge/agent.toml")
FINALIZE_UNIT = "atomicedge-finalize-staged.service"
_SPAN = re.compile(r"^\d+\s*(s|sec|min|m|h|hour|d|day)?s?$")
_DAYNAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class AgentConfig:
    policy: str = "none"
    schedule: str = "daily"
    splay: str = "30min"
    window: Window | None = None
    apply_schedule: str | None = None


def parse_config(text: str, source: str = "agent.toml") -> AgentConfig:
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{source}: not valid TOML ({exc})") from None
    policy = raw.get("policy", "none")
    if policy not in POLICIES:
        raise FormatError(f"{source}: policy = {policy!r} is not one of {', '.join(POLICIES)}",
                          "set policy = \"none\", \"check\", \"stage\" or \"apply\"")
    schedule = str(raw.get("schedule", "daily"))
    _validate_calendar(schedule, source)
    splay = str(raw.get("splay", "30min"))
    if not _SPAN.match(splay):
        raise FormatError(f"{source}: splay = {splay!r} is not a time span", "e.g. \"30min\"")
    window = None
    if "window" in raw:
        w = raw["window"]
        try:
            window = parse_window(list(w.get("days", [])), str(w.get("start", "")),
                                  int(w.get("length_minutes", 0)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise FormatError(f"{source}: [window] {exc}",
                              "days = [\"Sat\"], start = \"02:00\", length_minutes = 120") \
                from None
    return AgentConfig(policy, schedule, splay, window, _apply_schedule(raw, source))


def _apply_schedule(raw: dict[str, Any], source: str) -> str | None:
    section = raw.get("apply")
    if section is None:
        return None
    if not isinstance(section, dict) or "schedule" not in section:
        raise FormatError(f"{source}: [apply] needs schedule = \"...\"",
                          "e.g. [apply] schedule = \"*:0/1\" (every minute)")
    expr = str(section["schedule"])
    _validate_calendar(expr, f"{source}: [apply]")
    return expr


def _validate_calendar(expr: str, source: str) -> None:
    if not expr.strip() or "\n" in expr:
        raise FormatError(f"{source}: schedule is empty", "e.g. schedule = \"daily\"")
    if shutil.which("systemd-analyze"):
        proc = runner.run(["systemd-analyze", "calendar", expr],
                          what="systemd-analyze calendar", check=False, timeout=60)
        if proc.returncode != 0:
            raise FormatError(f"{source}: schedule = {expr!r} is not a systemd calendar "
                              "expression", "see systemd.time(7), e.g. \"*-*-* 03:00:00\"")


def load_config(root: Path = Path("/")) -> AgentConfig:
    path = root / str(CONFIG).lstrip("/")
    try:
        return parse_config(path.read_text(), str(path))
    except FileNotFoundError:
        return AgentConfig()


def generator_dropins(cfg: AgentConfig) -> dict[str, str]:
    """Timer drop-ins (file name -> content) the generator writes."""
    # AccuracySec=1s: the configured times are the times (systemd's default coalesces to 1min)
    out = {"atomicedge-agent.timer.d/50-schedule.conf":
           f"[Timer]\nOnCalendar={cfg.schedule}\nRandomizedDelaySec={cfg.splay}\n"
           "AccuracySec=1s\n"}
    if cfg.apply_schedule is not None:
        out["atomicedge-apply.timer.d/50-schedule.conf"] = (
            f"[Timer]\nOnCalendar=\nOnCalendar={cfg.apply_schedule}\nAccuracySec=1s\n")
    elif cfg.window is not None:
        days = ",".join(_DAYNAMES[d] for d in cfg.window.days)
        hh, mm = divmod(cfg.window.start_minute, 60)
        out["atomicedge-apply.timer.d/50-window.conf"] = (
            f"[Timer]\nOnCalendar=\nOnCalendar={days} *-*-* {hh:02d}:{mm:02d}:00 UTC\n")
    return out


def write_generator(outdir: Path, cfg: AgentConfig) -> None:
    for rel, text in generator_dropins(cfg).items():
        p = outdir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def tick(sysroot: Sysroot, cfg: AgentConfig, now: dt.datetime,
         reboot: bool = True) -> AgentDecision:
    """One agent run: look for an update, decide, act, record the state."""
    osname = ops.pick_osname(sysroot)
    if cfg.policy == "none":
        return decide_agent(AgentFacts("none", "", None), now)
    deps = sysroot.deployments()
    booted = sysroot.booted(deps) or (deps[0] if deps else None)
    _base, origin, avail = ops.check_update(sysroot, osname)
    staged = dp.pending_staged(sysroot, deps)
    env = GrubEnv(sysroot.grubenv_path).read()
    facts = AgentFacts(cfg.policy, booted.csum if booted else "", avail,
                       staged.csum if staged else None,
                       frozenset(ops.read_denylist(sysroot, osname)),
                       env.get("boot_success", "1") == "1" and "boot_counter" not in env,
                       cfg.window)
    decision = decide_agent(facts, now)
    act = decision.action in (Action.STAGE, Action.APPLY) and (not staged or
                                                               staged.csum != avail)
    if act and ops.apply_commit(sysroot, osname, avail, origin).staged:
        _arm_finalize()
    _save_state(sysroot, osname, cfg, decision, avail, now)
    if decision.action is Action.APPLY and reboot and sysroot.booted() is not None:
        _reboot()
    return decision


def decide_apply(cfg: AgentConfig, staged: bool, boot_confirmed: bool,
                 now: dt.datetime) -> tuple[bool, str]:
    """The apply timer's rule: reboot into a staged update (pure)."""
    if not staged:
        return False, "no update staged"
    if not boot_confirmed:
        return False, "current boot not confirmed healthy yet"
    if cfg.apply_schedule is None and cfg.policy != "apply":
        return False, "staged update is applied at the next reboot ([apply] schedule not set)"
    if cfg.window is not None and not cfg.window.contains(now):
        return False, "staged update waits for the maintenance window"
    return True, "rebooting into the staged update"


def apply_tick(sysroot: Sysroot, cfg: AgentConfig, now: dt.datetime, reboot: bool = True,
               log: Callable[[str], None] | None = None) -> tuple[bool, str]:
    """One apply-timer run: reboot into the staged deployment when :func:`decide_apply` says
    so. ``log`` gets the decision first (the reboot stops this very service)."""
    env = GrubEnv(sysroot.grubenv_path).read()
    confirmed = env.get("boot_success", "1") == "1" and "boot_counter" not in env
    go, reason = decide_apply(cfg, dp.pending_staged(sysroot) is not None, confirmed, now)
    if log is not None:
        log(f"apply: {reason}")
    if go and reboot and sysroot.booted() is not None:
        _arm_finalize()  # staged by hand or by another tool: its ExecStop must run too
        _reboot()
    return go, reason


def _arm_finalize() -> None:
    """A staged deployment is applied by the finalize unit's ExecStop at shutdown: the unit
    must be active (at boot it starts only if something was staged before)."""
    runner.run(["systemctl", "start", FINALIZE_UNIT], what=f"systemctl start {FINALIZE_UNIT}",
               check=False, timeout=120)


def _reboot() -> None:
    runner.run(["systemctl", "reboot", "--no-block"], what="systemctl reboot", check=False,
               timeout=120)


def _save_state(sysroot: Sysroot, osname: str, cfg: AgentConfig, d: AgentDecision,
                avail: str | None, now: dt.datetime) -> None:
    base = ops.var_lib(sysroot, osname)
    base.mkdir(parents=True, exist_ok=True)
    state = {"policy": cfg.policy, "last-run": now.isoformat(), "action": d.action.value,
             "reason": d.reason,
             "cached-update": {"checksum": avail} if avail else None}
    atomic_write(base / "agent-state.json", json.dumps(state, indent=1) + "\n")
