"""What ``atomicedge-healthcheck.service`` runs on every boot: gather facts, run checks, act.

The decision itself is :func:`atomicedge.device.decision.decide_boot`; this module only reads
the facts (booted deployment, grubenv) and carries the decision out: roll back (make the
booted fallback the default), remember the bad commit, run ``red.d``/``green.d``, set
``boot_success``/unset ``boot_counter``, write the MOTD and the boot history, reboot.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomicedge import runner
from atomicedge.device import deploy as dp
from atomicedge.device import ops
from atomicedge.device.decision import BootDecision, BootFacts, decide_boot
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import NotFoundError
from atomicedge.fsutil import atomic_write
from atomicedge.health import greenboot

Clock = Callable[[], dt.datetime]
BOOT_LOG = Path("/var/log/atomicedge/boots.jsonl")
MOTD = Path("/run/motd.d/boot-status")


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


def act(sysroot: Sysroot, root: Path, d: BootDecision, facts: BootFacts, now: dt.datetime,
        log: Callable[[str], None]) -> None:
    osname = ops.pick_osname(sysroot)
    for m in d.messages:
        log(m)
    if d.rollback:
        dp.rollback(sysroot)
        log("made the booted deployment the default")
    if d.denylist:
        remember_bad(sysroot, osname, d.denylist, now)
    if d.health.value == "green" and facts.booted_checksum:
        forgive(sysroot, osname, facts.booted_checksum)
    hook_env = {"GREENBOOT_FALLBACK": "1" if d.fallback else "0"}
    if d.run_red:
        greenboot.run_hooks(root, "red.d", log=log, env=hook_env)
    if d.run_green:
        greenboot.run_hooks(root, "green.d", log=log, env=hook_env)
    if d.grubenv_set or d.grubenv_unset:
        GrubEnv(sysroot.grubenv_path).update(d.grubenv_set, d.grubenv_unset)
    try:
        MOTD.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(MOTD, d.motd)
    except OSError:
        pass


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


def health_check(sysroot: Sysroot, root: Path = Path("/"), clock: Clock = _now,
                 log: Callable[[str], None] = print, reboot: bool = True) -> BootDecision:
    conf = greenboot.load_conf(root)
    facts = gather(sysroot, conf)
    log(f"atomicedge health check: booted index {facts.booted_index} of "
        f"{facts.n_deployments}, boot_counter={facts.boot_counter}")
    health = greenboot.run_checks(root, conf, log)
    now = clock()
    d = decide_boot(facts, health, now)
    act(sysroot, root, d, facts, now, log)
    record(sysroot, facts, d, health, now)
    if d.reboot and reboot:
        log("rebooting to try again")
        runner.run(["systemctl", "reboot", "--no-block"], what="systemctl reboot", check=False,
                   timeout=120)
    return d
