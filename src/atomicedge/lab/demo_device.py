"""The seed demo's OS-update act, for ``make demo``.

Install a device from ``repo_path``/``ref``, boot it under systemd-nspawn, publish an update
whose required health check fails (the seed's ``orig.txt`` check), let the device stage it,
watch three failed boots and the automatic fallback, then remove the check's cause and
upgrade by hand - the second attempt succeeds.

It publishes two commits on ``ref`` in ``repo_path`` (the device image "1.0" - the served OS
plus the agent, the seed's check and the lab driver - and the update "2.0"), so pass a ref
dedicated to the device act if other parts of the demo still need the old tip.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from atomicedge.device import ops
from atomicedge.device.grubenv import GrubEnv
from atomicedge.lab import nspawn, testtree
from atomicedge.ostree.repo import Repo

UPGRADE = """/usr/bin/atomicedge device upgrade
systemctl reboot --no-block
"""
RETRY = """printf 'policy = "stage"\\n' > /run/agent.toml
/usr/bin/atomicedge device agent --once --config /run/agent.toml
rm -f /etc/greenboot/orig.txt
/usr/bin/atomicedge device upgrade
systemctl reboot --no-block
"""
SHOW = ("Boot Status", "FALLBACK", "check", "agent:", "Staged", "Finalized", "Rebooting")


def _next(var: Path, script: str) -> None:
    lab = var / "lib" / "atomicedge-lab"
    lab.mkdir(parents=True, exist_ok=True)
    (lab / "next.sh").write_text("#!/bin/sh\n" + script)


def run(workdir: Path, repo_path: Path, ref: str, console: Any) -> dict[str, Any]:
    """Returns figures for the lead's summary (boots, seconds, commits, fallback seen)."""
    t0 = time.monotonic()
    repo = Repo.open(repo_path)
    # the device image of the act: the served OS plus the agent, the seed's check and the
    # lab driver that plays the operator inside the device
    v1 = testtree.lab_commit(repo, workdir, "1.0", ref)
    sysroot_path = workdir / "device-sysroot"
    console.print(f"[bold]device:[/] installing {ref} ({v1[:12]}) into {sysroot_path}")
    ops.install(sysroot_path, "edge", f"file://{repo_path.resolve()}", ref)
    sysroot = ops.open_sysroot(str(sysroot_path))
    var = sysroot.stateroot("edge") / "var"
    bad = testtree.lab_commit(repo, workdir, "2.0", ref)
    console.print(f"[bold]device:[/] published update {bad[:12]}; its required health check "
                  "fails (orig.txt != current commit)")
    _next(var, UPGRADE)
    boots: list[str] = []

    def on_boot(rec: nspawn.BootRecord) -> None:
        env = GrubEnv(sysroot.grubenv_path).read()
        line = (f"boot {rec.number}: {rec.deployment[:12]} (entry {rec.entry_index}) "
                f"grubenv after boot: {env}")
        boots.append(line)
        console.print("  " + line)
        for text in rec.console.splitlines():
            if any(key in text for key in SHOW) and "\x1b" not in text:
                console.print("      " + text.split("]: ", 1)[-1], markup=False)
        if env.get("boot_counter") == "0":
            # the next boot is the bootloader's fallback: there, show that the agent refuses
            # the rolled-back commit, then do the seed's second attempt by hand
            _next(var, RETRY)

    console.print("[bold]device:[/] booting under systemd-nspawn (upgrade stages, reboot "
                  "applies it)")
    result = nspawn.run(sysroot, max_boots=9, timeout=180, on_boot=on_boot,
                        binds=(repo_path.resolve(),))
    log = [json.loads(x) for x in (var / "log/atomicedge/boots.jsonl").read_text().splitlines()]
    final = ops.status(sysroot)
    console.print(ops.format_status(final))
    return {"boots": len(result.boots), "seconds": round(time.monotonic() - t0, 1),
            "fallback_seen": any(e["fallback"] for e in log),
            "failed_boots": sum(1 for e in log if e["health"] == "red"),
            "final_commit": final["deployments"][0]["checksum"], "bad_commit": bad,
            "boot_lines": boots}
