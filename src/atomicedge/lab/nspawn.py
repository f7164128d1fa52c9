"""Boot a deployment with systemd as PID 1 under systemd-nspawn (the seam for that tool).

This plays firmware + bootloader + initramfs: :func:`bootloader.select` picks the entry and
updates grubenv, then - like ``ostree-prepare-root`` - the deployment directory becomes ``/``,
``/usr`` is read-only, the stateroot's ``var`` is ``/var``, the physical sysroot is
``/sysroot``, and ``/run/ostree-booted`` exists.  A ``reboot`` inside makes nspawn exit with
133.  The image carries its own runtime (``/usr/bin/atomicedge`` on the image's python3):
nothing of the host is mounted into the device.

Two ways to run a device: the lab (:mod:`atomicedge.lab.devices`: detached, on the lab
network, one supervisor per device that boots again after each reboot) and the one-shot
:func:`run` here (``atomicedge device boot``): boot, follow reboots, and power off once a
boot has settled (health check done, no reboot asked for).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import ToolError
from atomicedge.lab import bootloader

log = logging.getLogger(__name__)
REBOOT_RC = 133
SETTLE_UNIT = "atomicedge-lab-settle.service"
# one-shot boots: once the boot has settled, power off - unless the health check asked for a
# reboot (its `systemctl reboot --no-block` is queued before it exits)
SETTLE = """[Unit]
Description=lab: power off once this boot has settled (one-shot boots)
After=atomicedge-healthcheck.service multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'systemctl list-jobs --no-legend | grep -Eq "(reboot|poweroff).target" \
|| systemctl poweroff --no-block'
"""
NOT_INSTALLED = "apt-get install systemd-container (deps/apt/lab.txt)"


@dataclass
class BootRecord:
    number: int
    entry_index: int
    deployment: str
    grubenv: dict[str, str]
    rc: int
    seconds: float
    console: str = ""


@dataclass
class BootRun:
    boots: list[BootRecord] = field(default_factory=list)

    @property
    def console(self) -> str:
        return "".join(b.console for b in self.boots)


def write_flag(choice: bootloader.BootChoice, directory: Path | None = None) -> Path:
    """``/run/ostree-booted`` of this boot: the chosen entry's kernel command line."""
    with tempfile.NamedTemporaryFile("w", prefix="ostree-booted.", delete=False,
                                     dir=directory) as f:
        f.write(" ".join(choice.entry.options) + "\n")
    return Path(f.name)


def nspawn_argv(sysroot: Sysroot, choice: bootloader.BootChoice, flag_file: Path, *,
                machine: str, netns: Path | None = None, binds: Sequence[tuple[Path, str]] = (),
                init_args: Sequence[str] = ()) -> list[str]:
    """The command line of one boot. ``netns``: a network namespace of the lab's own (else
    the device gets a private network with only ``lo``)."""
    ddir = choice.deployment_dir
    osname = ddir.parent.parent.name
    var = sysroot.stateroot(osname) / "var"
    argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(ddir),
            "--console=read-only", f"--machine={machine}",
            f"--network-namespace-path={netns}" if netns else "--private-network",
            # the device owns its network stack, as a machine does: firewalld's nftables rules,
            # keepalived's VIPs (nspawn keeps CAP_NET_ADMIN for --private-network only)
            "--capability=CAP_NET_ADMIN",
            f"--bind={sysroot.path.resolve()}:/sysroot:norbind", f"--bind={var.resolve()}:/var",
            f"--bind-ro={ddir}/usr:/usr", f"--bind-ro={flag_file}:/run/ostree-booted"]
    argv += [f"--bind-ro={src.resolve()}:{dest}" for src, dest in binds]
    return [*argv, "-b", "--", *init_args]


def leader_pid(nspawn_pid: int) -> int | None:
    """The container's PID 1 (systemd), seen from the host: the child of systemd-nspawn."""
    try:
        kids = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    for kid in kids:
        try:
            comm = Path(f"/proc/{kid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "systemd":
            return int(kid)
    return None


def _console(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n\n", "\n")


def boot_once(sysroot: Sysroot, number: int, timeout: float = 300.0,
              init_args: Sequence[str] = ()) -> BootRecord:
    """One boot that ends: by a reboot or poweroff inside, or once it has settled."""
    choice = bootloader.select(sysroot)
    with tempfile.TemporaryDirectory(prefix="atomicedge-boot.") as tmp:
        flag = write_flag(choice, Path(tmp))
        settle = Path(tmp) / SETTLE_UNIT
        settle.write_text(SETTLE)
        argv = nspawn_argv(sysroot, choice, flag, machine=f"atomicedge-{os.getpid()}",
                           binds=[(settle, f"/run/systemd/system/{SETTLE_UNIT}")],
                           init_args=[f"systemd.wants={SETTLE_UNIT}", *init_args])
        log.debug("boot %d: %s", number, " ".join(argv))
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            raise ToolError(f"boot {number} did not finish within {timeout:.0f}s",
                            "a unit hangs; see the console log", stderr=out[-4000:]) from None
        except FileNotFoundError:
            raise ToolError("systemd-nspawn is not installed", NOT_INSTALLED) from None
    if proc.returncode not in (0, REBOOT_RC):
        raise ToolError(f"systemd-nspawn failed with exit {proc.returncode}",
                        "see the console output", stderr=(proc.stdout + proc.stderr)[-4000:])
    return BootRecord(number, choice.index, choice.deployment_dir.name, choice.grubenv,
                      proc.returncode, time.monotonic() - start, _console(proc.stdout))


def run(sysroot: Sysroot, max_boots: int = 8, timeout: float = 300.0,
        on_boot: Callable[[BootRecord], None] | None = None,
        init_args: Sequence[str] = ()) -> BootRun:
    """Boot, and boot again after each in-container reboot (at most ``max_boots``)."""
    result = BootRun()
    for n in range(1, max_boots + 1):
        rec = boot_once(sysroot, n, timeout, init_args)
        result.boots.append(rec)
        if on_boot:
            on_boot(rec)
        if rec.rc != REBOOT_RC:
            break
    return result
