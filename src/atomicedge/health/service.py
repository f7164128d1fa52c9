"""What the health units run on every boot: gather facts, run checks, act - in greenboot's units.

The decision itself is :func:`atomicedge.device.decision.decide_boot`; this module only reads
the facts (booted deployment, grubenv) and carries the decision out, one phase per unit as
greenboot splits it (see ``PHASES``): the check (``atomicedge-healthcheck.service``, alias
``greenboot-healthcheck.service``) decides, makes a fallback's rollback permanent, remembers
the bad commit and fails on red; only when ``boot-complete.target`` is reached (a green boot:
the check and every other unit it requires passed) is ``boot_success`` set and ``green.d`` run;
a red boot starts ``redboot.target`` (``red.d``, then the auto reboot while an update is on
trial); the status unit writes the MOTD.  The check's result is handed to the later units in
``/run/atomicedge/boot-health.json``.  :func:`health_check` runs every phase in one go.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atomicedge import runner
from atomicedge.device import deploy as dp
from atomicedge.device import ops
from atomicedge.device.decision import (
    BootDecision,
    BootFacts,
    Health,
    HealthResult,
    decide_boot,
)
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import CorruptionError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.health import greenboot

Clock = Callable[[], dt.datetime]
BOOT_LOG = Path("/var/log/atomicedge/boots.jsonl")
MOTD = Path("/run/motd.d/boot-status")
STATE = Path("/run/atomicedge/boot-health.json")
LOADING = "Boot Status is INDETERMINATE - health checks are running\n"
# the phases, as greenboot's units run them: atomicedge-healthcheck.service (alias
# greenboot-healthcheck.service) "check"; after boot-complete.target greenboot-grub2-set-success
# "success" and greenboot-task-runner "green"; in redboot.target redboot-task-runner "red" and
# redboot-auto-reboot "reboot"; greenboot-status "status" last
PHASES = ("all", "check", "success", "green", "red", "reboot", "status")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def gather(sysroot: Sysroot, conf: greenboot.Config) -> BootFacts:
    deps = sysroot.deployments()
    booted = sysroot.booted(deps)
    if booted is None:
        raise NotFoundError("cannot find the booted deployment",
                            "health checks run on a booted device (/run/ostree-booted)")
    idx = next(i for i, d in enumerate(deps) if d.same(booted))
    env = GrubEnv(sysroot.grubenv_path).read()
    raw = env.get("boot_counter")
    counter = int(raw) if raw is not None and raw.lstrip("-").isdigit() else None
    return BootFacts(counter, idx, len(deps), booted.csum, deps[0].csum,
                     conf.max_boot_attempts)


def remember_bad(sysroot: Sysroot, osname: str, csum: str, now: dt.datetime) -> None:
    path = ops.var_lib(sysroot, osname) / "denylist"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    if csum not in old:
        atomic_write(path, old + f"{csum} rolled-back {now.isoformat()}\n")


def forgive(sysroot: Sysroot, osname: str, csum: str) -> None:
    """A commit that just booted green is no longer "bad" (e.g. the retry by hand worked)."""
    path = ops.var_lib(sysroot, osname) / "denylist"
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = [ln for ln in lines if not ln.startswith(csum)]
    if keep != lines:
        atomic_write(path, "".join(f"{ln}\n" for ln in keep))


def record(sysroot: Sysroot, facts: BootFacts, d: BootDecision, health: Any,
           now: dt.datetime) -> None:
    entry = {"time": now.isoformat(), "booted": facts.booted_checksum,
             "booted_index": facts.booted_index, "boot_counter": facts.boot_counter,
             "health": d.health.value, "fallback": d.fallback, "reboot": d.reboot,
             "required_failed": list(health.required_failed),
             "wanted_failed": list(health.wanted_failed), "timed_out": list(health.timed_out),
             "messages": list(d.messages), "status": ops.status(sysroot)}
    BOOT_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(BOOT_LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- greenboot's units, one phase each ------------------------------------------------------

@dataclass
class BootState:
    """What the check phase found and decided, for the units that run after it (kept in
    ``/run``: it is about this boot only).  ``final`` is the boot's outcome, set by the
    success phase (green) or the reboot phase (red)."""

    facts: BootFacts
    health: HealthResult
    decision: BootDecision
    final: BootDecision | None = None

    def dump(self) -> str:
        return json.dumps({"facts": asdict(self.facts), "health": asdict(self.health),
                           "decision": asdict(self.decision),
                           "final": asdict(self.final) if self.final else None}, indent=1)

    @classmethod
    def parse(cls, text: str) -> BootState:
        raw = json.loads(text)
        h, final = raw["health"], raw["final"]
        health = HealthResult(tuple(h["required_failed"]), tuple(h["wanted_failed"]),
                              tuple(h["timed_out"]), bool(h["deadline_hit"]))
        return cls(BootFacts(**raw["facts"]), health, _decision(raw["decision"]),
                   _decision(final) if final else None)


def _decision(raw: dict[str, Any]) -> BootDecision:
    return BootDecision(**{**raw, "health": Health(raw["health"]),
                           "grubenv_unset": tuple(raw["grubenv_unset"]),
                           "messages": tuple(raw["messages"])})


def save_state(state: BootState, path: Path = STATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, state.dump())


def load_state(path: Path = STATE) -> BootState:
    try:
        return BootState.parse(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"no health-check result for this boot in {path}",
                            "greenboot-healthcheck.service (atomicedge-healthcheck.service) "
                            "runs first") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptionError(f"{path}: unreadable health-check result ({exc})") from None


def _write_motd(text: str) -> None:
    try:
        MOTD.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(MOTD, text)
    except OSError:
        pass


def check(sysroot: Sysroot, root: Path = Path("/"), clock: Clock = _now,
          log: Callable[[str], None] = print) -> BootState:
    """greenboot-healthcheck.service: the checks and the decision; on the bootloader's
    fallback boot the rollback is made permanent and the bad commit remembered."""
    conf = greenboot.load_conf(root)
    facts = gather(sysroot, conf)
    _write_motd(LOADING)
    log(f"atomicedge health check: booted index {facts.booted_index} of "
        f"{facts.n_deployments}, boot_counter={facts.boot_counter}")
    health = greenboot.run_checks(root, conf, log)
    now = clock()
    d = decide_boot(facts, health, now)
    for m in d.messages:
        log(m)
    if d.rollback:
        dp.rollback(sysroot)
        log("made the booted deployment the default")
    if d.denylist:
        remember_bad(sysroot, ops.pick_osname(sysroot), d.denylist, now)
    return BootState(facts, health, d)


def _hook_env(d: BootDecision) -> dict[str, str]:
    return {"GREENBOOT_FALLBACK": "1" if d.fallback else "0"}


def success(sysroot: Sysroot, state: BootState, clock: Clock = _now,
            log: Callable[[str], None] = print) -> None:
    """greenboot-grub2-set-success.service (after boot-complete.target): the boot counts; the
    boot history gets its line."""
    GrubEnv(sysroot.grubenv_path).update({"boot_success": "1"}, ("boot_counter",))
    if state.facts.booted_checksum:
        forgive(sysroot, ops.pick_osname(sysroot), state.facts.booted_checksum)
    state.final = state.decision
    log("boot marked successful (boot_success=1)")
    record(sysroot, state.facts, state.final, state.health, clock())


def green(state: BootState, root: Path = Path("/"), log: Callable[[str], None] = print) -> None:
    """greenboot-task-runner.service: green.d (on a green fallback boot red.d first, so red.d
    scripts learn of the rollback, GREENBOOT_FALLBACK=1)."""
    d = state.decision
    if d.run_red:
        greenboot.run_hooks(root, "red.d", log=log, env=_hook_env(d))
    greenboot.run_hooks(root, "green.d", log=log, env=_hook_env(d))


def red(state: BootState, root: Path = Path("/"), log: Callable[[str], None] = print) -> None:
    """redboot-task-runner.service: red.d."""
    greenboot.run_hooks(root, "red.d", log=log, env=_hook_env(state.decision))


def auto_reboot(sysroot: Sysroot, state: BootState, clock: Clock = _now,
                log: Callable[[str], None] = print) -> BootDecision:
    """redboot-auto-reboot.service: reboot while an update is on trial (the caller does).
    When the scripts passed, the red boot came from another unit boot-complete.target
    requires: decided as a failed required check.  The boot history gets its line."""
    d, health = state.decision, state.health
    if d.health is Health.GREEN:
        health = HealthResult(required_failed=("a unit required by boot-complete.target",))
        d = decide_boot(state.facts, health, clock())
        for m in d.messages[-2:]:
            log(m)
    state.final = d
    record(sysroot, state.facts, d, health, clock())
    return d


def status(state: BootState) -> str:
    """greenboot-status.service: the boot's outcome in the MOTD."""
    motd = (state.final or state.decision).motd
    _write_motd(motd)
    return motd


def _no_result(sysroot: Sysroot, root: Path, clock: Clock,
               log: Callable[[str], None]) -> BootState:
    """The red path after a health check that ended without a result (it crashed)."""
    log("the health check recorded no result for this boot: handled as a red boot")
    facts = gather(sysroot, greenboot.load_conf(root))
    health = HealthResult(required_failed=("greenboot-healthcheck.service (no result)",))
    return BootState(facts, health, decide_boot(facts, health, clock()))


def _reboot(log: Callable[[str], None]) -> None:
    log("rebooting to try again")
    runner.run(["systemctl", "reboot", "--no-block"], what="systemctl reboot", check=False,
               timeout=120)


def health_check(sysroot: Sysroot, root: Path = Path("/"), clock: Clock = _now,
                 log: Callable[[str], None] = print, reboot: bool = True) -> BootDecision:
    """Every phase in one run, in the order the units run them (by hand, without systemd)."""
    state = check(sysroot, root, clock, log)
    if state.decision.health is Health.GREEN:
        success(sysroot, state, clock, log)
        green(state, root, log)
    else:
        red(state, root, log)
        auto_reboot(sysroot, state, clock, log)
    status(state)
    d = state.final or state.decision
    if d.reboot and reboot:
        _reboot(log)
    return d


def run_phase(phase: str, sysroot: Sysroot, root: Path = Path("/"), clock: Clock = _now,
              log: Callable[[str], None] = print, reboot: bool = True,
              state_path: Path = STATE) -> bool:
    """One unit's phase (``all`` = every phase); False = the unit fails (red check, or a red
    boot that needs a human)."""
    if phase == "all":
        return health_check(sysroot, root, clock, log, reboot).health is Health.GREEN
    if phase == "check":
        state = check(sysroot, root, clock, log)
        save_state(state, state_path)
        return state.decision.health is Health.GREEN
    if phase not in PHASES:
        raise UsageError(f"unknown health-check phase {phase!r}", f"one of {', '.join(PHASES)}")
    if phase in ("red", "reboot", "status") and not state_path.exists():
        state = _no_result(sysroot, root, clock, log)  # the check crashed: a red boot
    else:
        state = load_state(state_path)
    if phase == "success":
        success(sysroot, state, clock, log)
        save_state(state, state_path)
    elif phase == "green":
        green(state, root, log)
    elif phase == "red":
        red(state, root, log)
    elif phase == "reboot":
        d = auto_reboot(sysroot, state, clock, log)
        save_state(state, state_path)
        if not d.reboot:
            return False
        if reboot:
            _reboot(log)
    else:
        status(state)
    return True
