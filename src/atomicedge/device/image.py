"""Put the device agent into an OS tree: units, timers, generator, CLI wrapper, defaults.

The image builder calls :func:`install_device_files` on the tree before the blueprint's
customizations (the test trees do the same), so every image carries the finalize unit, the
health-check unit, the agent timers, greenboot's directories and
``/etc/atomicedge/agent.toml``; the code itself (the device closure) is copied in by
``atomicedge.compose.closure``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

UNITS_DIR = Path(__file__).parent / "units"
UNITS = ("atomicedge-finalize-staged.service", "atomicedge-healthcheck.service",
         "atomicedge-agent.service", "atomicedge-agent.timer", "atomicedge-apply.timer",
         "atomicedge-apply.service", "atomicedge-ignition-firstboot.service")
# greenboot's names (docs/device.md): real units beside the aliases in the [Install] sections
# of atomicedge-healthcheck.service (greenboot-healthcheck) and atomicedge-finalize-staged
# (greenboot-grub2-set-counter)
GREENBOOT_UNITS = ("greenboot-grub2-set-success.service", "greenboot-task-runner.service",
                   "greenboot-status.service", "redboot.target", "redboot-task-runner.service",
                   "redboot-auto-reboot.service")


def _enable(sysd: Path, unit: str) -> None:
    """What ``systemctl enable`` makes of the unit's [Install] section, as vendor links in
    /usr/lib/systemd/system: WantedBy= / RequiredBy= (.wants / .requires) and Alias=."""
    section = ""
    for line in (sysd / unit).read_text().splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        if section != "[Install]" or "=" not in s:
            continue
        key, _, value = s.partition("=")
        for name in value.split():
            if key == "Alias":
                link, target = sysd / name, unit
            elif key in ("WantedBy", "RequiredBy"):
                link = sysd / f"{name}.{'wants' if key == 'WantedBy' else 'requires'}" / unit
                target = f"../{unit}"
            else:
                continue
            link.parent.mkdir(exist_ok=True)
            if not link.is_symlink():
                os.symlink(target, link)


def install_device_files(tree: Path, agent_toml: str | None = None) -> None:
    """Install into ``tree`` (an ostree-style tree: config defaults live in ``usr/etc``)."""
    sysd = tree / "usr" / "lib" / "systemd" / "system"
    sysd.mkdir(parents=True, exist_ok=True)
    for unit in (*UNITS, *GREENBOOT_UNITS):
        shutil.copyfile(UNITS_DIR / unit, sysd / unit)
        os.chmod(sysd / unit, 0o644)
    for unit in (*UNITS, *GREENBOOT_UNITS):
        _enable(sysd, unit)
    gen = tree / "usr" / "lib" / "systemd" / "system-generators"
    gen.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(UNITS_DIR / "atomicedge-generator.sh", gen / "atomicedge-generator")
    os.chmod(gen / "atomicedge-generator", 0o755)
    wrapper = tree / "usr" / "bin" / "atomicedge"
    shutil.copyfile(UNITS_DIR / "atomicedge.sh", wrapper)
    os.chmod(wrapper, 0o755)
    etc = tree / "usr" / "etc" if (tree / "usr" / "etc").is_dir() else tree / "etc"
    (etc / "atomicedge").mkdir(parents=True, exist_ok=True)
    toml = agent_toml if agent_toml is not None else (UNITS_DIR / "agent.toml").read_text()
    (etc / "atomicedge" / "agent.toml").write_text(toml)
    for sub in ("check/required.d", "check/wanted.d", "green.d", "red.d"):
        (etc / "greenboot" / sub).mkdir(parents=True, exist_ok=True)
        (tree / "usr" / "lib" / "greenboot" / sub).mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "lib" / "motd.d").mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "lib" / "motd.d" / "boot-status").write_text(
        "Boot Status is INDETERMINATE - health checks have not finished\n")
