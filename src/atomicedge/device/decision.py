"""The device's decisions as pure functions: facts + health results + clock -> decision.

Nothing here touches the disk, runs a process or reads the time: callers gather the facts
(grubenv, deployment list, health results, ``now``) and carry out the returned decision.
That keeps the rules that decide between "reboot again", "fall back" and "stop and call a
human" testable exhaustively without root, and lets real GRUB or a different agent reuse them.

Three machines:

* :func:`grub_step` - what the bootloader does before the kernel starts (greenboot's GRUB
  script: count down ``boot_counter`` while ``boot_success=0``, pick the rollback entry when
  it runs out, reset ``boot_success=0`` on every boot).
* :func:`decide_boot` - what userspace does once health checks finished.
* :func:`decide_agent` - what the update agent does on a timer tick (rpm-ostreed's
  ``AutomaticUpdatePolicy`` plus a maintenance window and a denylist of rolled-back commits).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_MAX_BOOT_ATTEMPTS = 3
GREENBOOT_CONF = "greenboot/greenboot.conf"   # below an /etc
FALLBACK_MESSAGE = "FALLBACK BOOT DETECTED! Default deployment has been rolled back."
FALLBACK_UNHEALTHY = "FALLBACK BOOT DETECTED but SYSTEM is still UNHEALTHY. " \
    "Manual intervention necessary."


# --- bootloader -----------------------------------------------------------------------------

@dataclass(frozen=True)
class GrubStep:
    entry: int                      # 0 = default deployment, 1 = rollback
    env: dict[str, str]             # the environment block after save_env
    counted: bool                   # whether this boot consumed an attempt


def grub_step(env: dict[str, str], n_entries: int) -> GrubStep:
    """One bootloader run over ``env`` (greenboot's 08_greenboot.cfg, integer arithmetic)."""
    new = dict(env)
    entry = 0
    counted = False
    counter = env.get("boot_counter")
    if counter is not None and env.get("boot_success") == "0":
        counted = True
        if counter in ("0", "-1") or not _is_int(counter) or int(counter) <= 0:
            entry = 1 if n_entries > 1 else 0
            new["boot_counter"] = "-1"
        else:
            new["boot_counter"] = str(int(counter) - 1)
    new["boot_success"] = "0"
    return GrubStep(entry=min(entry, max(n_entries - 1, 0)), env=new, counted=counted)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def conf_values(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a shell-style conf (greenboot.conf), quotes around values removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or "=" not in s:
            continue
        k, _, v = s.partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        values[k.strip()] = v
    return values


def max_boot_attempts(text: str) -> tuple[int, str | None]:
    """``GREENBOOT_MAX_BOOT_ATTEMPTS`` of a greenboot.conf: (attempts, problem or None).

    Unset means greenboot's default of 3; a value that is not a whole number >= 1 also gives
    the default, with the problem described so the caller can log it (a bad conf must not
    stop an update from being armed at shutdown).
    """
    raw = conf_values(text).get("GREENBOOT_MAX_BOOT_ATTEMPTS")
    if raw is None or raw == "":
        return DEFAULT_MAX_BOOT_ATTEMPTS, None
    if raw.isdigit() and int(raw) >= 1:
        return int(raw), None
    return DEFAULT_MAX_BOOT_ATTEMPTS, (f"GREENBOOT_MAX_BOOT_ATTEMPTS={raw!r} is not a whole "
                                       f"number >= 1; using {DEFAULT_MAX_BOOT_ATTEMPTS}")


# --- boot decision --------------------------------------------------------------------------

class Health(StrEnum):
    GREEN = "green"
    RED = "red"


@dataclass(frozen=True)
class HealthResult:
    required_failed: tuple[str, ...] = ()
    wanted_failed: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = ()     # also listed in required_/wanted_failed
    deadline_hit: bool = False

    @property
    def status(self) -> Health:
        return Health.RED if (self.required_failed or self.deadline_hit) else Health.GREEN


@dataclass(frozen=True)
class BootFacts:
    boot_counter: int | None          # grubenv after the bootloader ran; -1 = fell back
    booted_index: int                 # position of the booted deployment in the list
    n_deployments: int
    booted_checksum: str = ""
    default_checksum: str = ""        # deployment 0 (what the bootloader would have preferred)
    max_boot_attempts: int = DEFAULT_MAX_BOOT_ATTEMPTS

    def __post_init__(self) -> None:
        # facts no boot can produce would otherwise decide "no fallback" silently
        if not 0 <= self.booted_index < self.n_deployments:
            raise ValueError(f"booted index {self.booted_index} is not one of the "
                             f"{self.n_deployments} deployments")


@dataclass(frozen=True)
class BootDecision:
    health: Health
    fallback: bool = False                   # this boot is the bootloader's fallback
    rollback: bool = False                   # make the booted deployment the default
    denylist: str | None = None              # commit to remember as "rolled back"
    grubenv_set: dict[str, str] = field(default_factory=dict)
    grubenv_unset: tuple[str, ...] = ()
    run_green: bool = False
    run_red: bool = False
    reboot: bool = False
    messages: tuple[str, ...] = ()
    motd: str = ""


def decide_boot(facts: BootFacts, health: HealthResult, now: dt.datetime) -> BootDecision:
    """What to do after health checks ran on this boot."""
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    fallback = facts.boot_counter == -1 and facts.booted_index > 0
    msgs: list[str] = []
    denied = None
    if fallback:
        msgs.append(FALLBACK_MESSAGE)
        denied = facts.default_checksum or None
    if health.status is Health.GREEN:
        msgs.append("Boot Status is GREEN - Health Check SUCCESS")
        if health.wanted_failed:
            msgs.append("wanted health checks failed: " + ", ".join(health.wanted_failed))
        motd = _motd("GREEN - Health Check SUCCESS", stamp, health, fallback)
        return BootDecision(health=Health.GREEN, fallback=fallback, rollback=fallback,
                            denylist=denied, grubenv_set={"boot_success": "1"},
                            grubenv_unset=("boot_counter",), run_green=True, run_red=fallback,
                            messages=tuple(msgs), motd=motd)
    msgs.append("Boot Status is RED - Health Check FAILURE!")
    failed = health.required_failed + (("overall deadline",) if health.deadline_hit else ())
    msgs.append("required health checks failed: " + ", ".join(failed))
    armed = facts.boot_counter is not None and facts.boot_counter >= 0
    if fallback or facts.boot_counter == -1:
        msgs.append(FALLBACK_UNHEALTHY)
        reboot = False
    elif armed and facts.n_deployments > 1:
        msgs.append(f"SYSTEM is UNHEALTHY. Rebooting ({facts.boot_counter} of "
                    f"{facts.max_boot_attempts} attempts left before fallback)")
        reboot = True
    else:
        msgs.append("SYSTEM is UNHEALTHY, but no update is on trial (boot_counter unset). "
                    "Manual intervention necessary.")
        reboot = False
    motd = _motd("RED - Health Check FAILURE!", stamp, health, fallback)
    return BootDecision(health=Health.RED, fallback=fallback, rollback=fallback,
                        denylist=denied, run_red=True, reboot=reboot, messages=tuple(msgs),
                        motd=motd)


def _motd(status: str, stamp: str, health: HealthResult, fallback: bool) -> str:
    lines = [f"Boot Status is {status} ({stamp})"]
    if fallback:
        lines.append(FALLBACK_MESSAGE)
    for name in health.required_failed:
        lines.append(f"  required check failed: {name}")
    for name in health.wanted_failed:
        lines.append(f"  wanted check failed: {name}")
    for name in health.timed_out:
        lines.append(f"  check timed out: {name}")
    return "\n".join(lines) + "\n"


# --- update agent ---------------------------------------------------------------------------

POLICIES = ("none", "check", "stage", "apply")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """A weekly maintenance window: ``days`` (0=Mon), start minute of day, length (UTC)."""

    days: tuple[int, ...]
    start_minute: int
    length_minutes: int

    def contains(self, now: dt.datetime) -> bool:
        week = 7 * 24 * 60
        minute_of_week = now.weekday() * 1440 + now.hour * 60 + now.minute
        for day in self.days:
            begin = day * 1440 + self.start_minute
            if (minute_of_week - begin) % week < self.length_minutes:
                return True
        return False


class Action(StrEnum):
    NOTHING = "nothing"
    REPORT = "report"        # policy=check: note the available update
    STAGE = "stage"          # download + stage (finalized at the next shutdown)
    APPLY = "apply"          # stage if needed, then reboot now
    WAIT = "wait"            # staged, waiting for the maintenance window


@dataclass(frozen=True)
class AgentFacts:
    policy: str
    booted_checksum: str
    available_checksum: str | None        # newest commit of the tracked ref, if known
    staged_checksum: str | None = None
    denylist: frozenset[str] = frozenset()
    boot_confirmed: bool = True           # this boot went green (boot_success=1)
    window: Window | None = None


@dataclass(frozen=True)
class AgentDecision:
    action: Action
    reason: str


def decide_agent(facts: AgentFacts, now: dt.datetime) -> AgentDecision:
    """One agent tick; never stages a denylisted commit and never acts on an unhealthy boot."""
    if facts.policy not in POLICIES:
        return AgentDecision(Action.NOTHING, f"unknown policy {facts.policy!r}")
    if facts.policy == "none":
        return AgentDecision(Action.NOTHING, "automatic updates disabled (policy=none)")
    if not facts.boot_confirmed:
        return AgentDecision(Action.NOTHING, "current boot not confirmed healthy yet")
    avail = facts.available_checksum
    if not avail or avail == facts.booted_checksum:
        return AgentDecision(Action.NOTHING, "no update available")
    if avail in facts.denylist:
        return AgentDecision(Action.NOTHING, f"update {avail[:12]} was rolled back before; "
                             "skipping it (deploy it by hand to retry)")
    if facts.policy == "check":
        return AgentDecision(Action.REPORT, f"update {avail[:12]} available")
    if facts.policy == "stage":
        if facts.staged_checksum == avail:
            return AgentDecision(Action.NOTHING, f"update {avail[:12]} already staged")
        return AgentDecision(Action.STAGE, f"staging update {avail[:12]}")
    in_window = facts.window is None or facts.window.contains(now)
    if in_window:
        return AgentDecision(Action.APPLY, f"applying update {avail[:12]} (in window)")
    if facts.staged_checksum == avail:
        return AgentDecision(Action.WAIT, f"update {avail[:12]} staged; waiting for window")
    return AgentDecision(Action.STAGE, f"staging update {avail[:12]}; apply in window")


def parse_window(days: list[str], start: str, length_minutes: int) -> Window:
    """``days=["Mon","Sat"], start="02:30", length_minutes=60`` -> :class:`Window`."""
    idx = []
    for d in days:
        key = d.strip().lower()[:3]
        if key not in DAYS:
            raise ValueError(f"unknown day {d!r} (use Mon..Sun)")
        idx.append(DAYS.index(key))
    hh, sep, mm = start.partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or int(hh) > 23 or int(mm) > 59:
        raise ValueError(f"start {start!r} is not HH:MM")
    if length_minutes <= 0:
        raise ValueError("length_minutes must be > 0")
    return Window(tuple(sorted(set(idx))), int(hh) * 60 + int(mm), length_minutes)
