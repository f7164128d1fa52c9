"""Boot a deployment with systemd as PID 1 under systemd-nspawn (the seam for that tool).

This plays firmware + bootloader + initramfs: :func:`bootloader.select` picks the entry and
updates grubenv, then - like ``ostree-prepare-root`` - the deployment directory becomes ``/``,
``/usr`` is read-only, the stateroot's ``var`` is ``/var``, the physical sysroot is
``/sysroot``, and ``/run/ostree-booted`` exists.  A ``reboot`` inside makes nspawn exit with
133; :func:`run` then boots again, until the system powers off, stops rebooting or
``max_boots`` is reached.

The device code inside the boot is this same Python package, bind-mounted read-only at
``/usr/lib/atomicedge/python`` (with the venv's site-packages at ``/usr/lib/atomicedge/site``)
because the test trees do not carry it yet; the image's ``/usr/bin/atomicedge`` wrapper looks
there first.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import atomicedge
from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import ToolError
from atomicedge.lab import bootloader

log = logging.getLogger(__name__)
REBOOT_RC = 133


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


def _host_python_dirs() -> tuple[Path, Path | None]:
    pkg_parent = Path(atomicedge.__file__).resolve().parent.parent
    site = None
    for p in sys.path:
        if p.endswith("site-packages") and (Path(p) / "rich").is_dir():
            site = Path(p)
            break
    return pkg_parent, site


def nspawn_argv(sysroot: Sysroot, choice: bootloader.BootChoice, flag_file: Path,
                extra_args: list[str], binds: tuple[Path, ...] = ()) -> list[str]:
    ddir = choice.deployment_dir
    osname = ddir.parent.parent.name
    var = sysroot.stateroot(osname) / "var"
    src, site = _host_python_dirs()
    argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(ddir),
            "--private-network", "--console=read-only", f"--machine=atomicedge-{os.getpid()}",
            f"--bind={sysroot.path.resolve()}:/sysroot:norbind", f"--bind={var.resolve()}:/var",
            f"--bind-ro={ddir}/usr:/usr", f"--bind-ro={flag_file}:/run/ostree-booted",
            f"--bind-ro={src}:/usr/lib/atomicedge/python"]
    if site is not None:
        argv.append(f"--bind-ro={site}:/usr/lib/atomicedge/site")
    argv += [f"--bind-ro={p.resolve()}" for p in binds]  # e.g. a file:// update repo
    argv += ["-b", "--", *extra_args]
    return argv


def boot_once(sysroot: Sysroot, number: int, timeout: float = 300.0,
              extra_args: list[str] | None = None, binds: tuple[Path, ...] = ()) -> BootRecord:
    choice = bootloader.select(sysroot)
    with tempfile.NamedTemporaryFile("w", prefix="ostree-booted.", delete=False) as f:
        f.write(" ".join(choice.entry.options) + "\n")
        flag = Path(f.name)
    argv = nspawn_argv(sysroot, choice, flag, extra_args or [], binds)
    log.debug("boot %d: %s", number, " ".join(argv))
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        raise ToolError(f"boot {number} did not finish within {timeout:.0f}s",
                        "a unit hangs; see the console log", stderr=out[-4000:]) from None
    except FileNotFoundError:
        raise ToolError("systemd-nspawn is not installed",
                        "apt-get install systemd-container") from None
    finally:
        flag.unlink(missing_ok=True)
    if proc.returncode not in (0, REBOOT_RC):
        raise ToolError(f"systemd-nspawn failed with exit {proc.returncode}",
                        "see the console output", stderr=(proc.stdout + proc.stderr)[-4000:])
    return BootRecord(number, choice.index, choice.deployment_dir.name, choice.grubenv,
                      proc.returncode, time.monotonic() - start,
                      proc.stdout.replace("\r\n", "\n").replace("\n\n", "\n"))


def run(sysroot: Sysroot, max_boots: int = 8, timeout: float = 300.0,
        on_boot: Callable[[BootRecord], None] | None = None,
        extra_args: list[str] | None = None, binds: tuple[Path, ...] = ()) -> BootRun:
    """Boot, and boot again after each in-container reboot (at most ``max_boots``)."""
    result = BootRun()
    for n in range(1, max_boots + 1):
        rec = boot_once(sysroot, n, timeout, extra_args, binds)
        result.boots.append(rec)
        if on_boot:
            on_boot(rec)
        if rec.rc != REBOOT_RC:
            break
    return result


def in_container() -> bool:
    return Path("/run/systemd/container").exists()
