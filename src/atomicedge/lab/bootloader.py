"""The bootloader's job, in one place so real GRUB can replace it later.

What GRUB plus greenboot's ``08_greenboot.cfg`` do before Linux starts: load the BLS entries
of the live ``boot/loader`` (default first), load ``grubenv``, run the counter arithmetic of
:func:`atomicedge.device.decision.grub_step`, ``save_env``, and hand the chosen entry's
``options`` (with its ``ostree=``) to the kernel.  The kernel+initramfs part (resolve
``ostree=`` to the deployment, mount it, ``/var``, ``/sysroot``) is in :mod:`nspawn`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from atomicedge.device import bls
from atomicedge.device.decision import grub_step
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import CorruptionError, NotFoundError


@dataclass(frozen=True)
class BootChoice:
    index: int
    entry: bls.BootEntry
    deployment_dir: Path
    grubenv: dict[str, str]
    counted: bool


def resolve_ostree_arg(sysroot: Sysroot, arg: str) -> Path:
    """What ostree-prepare-root does with ``ostree=/ostree/boot.N/OS/CSUM/SERIAL``."""
    if not bls.OSTREE_ARG.match(arg):
        raise CorruptionError(f"malformed ostree= argument {arg!r}")
    link = sysroot.path / arg.lstrip("/")
    target = (link.parent / os.readlink(link)).resolve() if link.is_symlink() else None
    if target is None or not target.is_dir():
        raise NotFoundError(f"ostree={arg} does not lead to a deployment",
                            "the boot configuration is damaged")
    return target


def select(sysroot: Sysroot) -> BootChoice:
    """One boot's bootloader run: pick the entry, update grubenv (save_env)."""
    entries = bls.read_entries(sysroot.boot / "loader" / "entries")
    if not entries:
        raise NotFoundError(f"no boot entries in {sysroot.boot / 'loader' / 'entries'}",
                            "install the device first: atomicedge device install")
    env_file = GrubEnv(sysroot.grubenv_path)
    try:
        env = env_file.read() if env_file.exists() else {}
        writable = env_file.exists()
    except CorruptionError:  # GRUB's load_env fails quietly: boot the default, save nothing
        env, writable = {}, False
    step = grub_step(env, len(entries))
    if writable:
        env_file.write(step.env)
    entry = entries[step.entry]
    arg = entry.ostree_arg
    if arg is None:
        raise CorruptionError(f"boot entry {entry.filename} has no ostree= argument")
    return BootChoice(step.entry, entry, resolve_ostree_arg(sysroot, arg), step.env,
                      step.counted)
