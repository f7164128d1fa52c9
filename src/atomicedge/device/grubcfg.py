"""The GRUB menu of a real device: ``grub.cfg`` from the BLS entries plus the boot counter.

Debian 12's GRUB 2.06 has neither ``blscfg`` nor greenboot's ``increment``/``decrement``
commands, so the device writes the whole menu itself after every change of the deployment
list (deploy, finalize, rollback, undeploy, cleanup - all go through
:meth:`atomicedge.device.sysroot.Sysroot.write_deployments`):

* ``boot/loader.N/grub.cfg`` is written beside the new entries *before* the ``boot/loader``
  symlink swap, and ``boot/grub/grub.cfg`` is the symlink ``../loader/grub.cfg`` (what
  ostree's grub2 backend does), so the one ``rename`` of the swap switches entries and menu
  together: a power cut leaves the old menu with the old list or the new menu with the new.
* The counter script is *generated from* :func:`atomicedge.device.decision.grub_step`, the one
  source of truth the emulated bootloader of the nspawn lab runs too: for every counter value
  the ladder covers, the branch is what ``grub_step`` returns; ``tests/device/test_grub_script``
  runs the generated script in real GRUB (grub-emu) against ``grub_step`` for every state.

The device writes the menu only when the image has a real GRUB (``boot/grub/grub.cfg`` is the
symlink the disk builder makes); lab sysroots booted by the emulated bootloader keep exactly
ostree's layout.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from atomicedge.device import bls
from atomicedge.device.decision import grub_step
from atomicedge.fsutil import atomic_write

CFG_LINK_TARGET = "../loader/grub.cfg"
FIFREEZE, FITHAW = 0xC0045877, 0xC0045878
LADDER_MAX = 99            # counters 1..99 count down; GREENBOOT_MAX_BOOT_ATTEMPTS above is odd
TIMEOUT = 1


def _q(text: str) -> str:
    """A GRUB single-quoted word (GRUB's shell quoting, like sh: ' -> '\\'')."""
    return "'" + text.replace("'", "'\\''") + "'"


def _outcome(counter: str | None, success: str | None, n: int) -> tuple[int, str | None]:
    env = {}
    if counter is not None:
        env["boot_counter"] = counter
    if success is not None:
        env["boot_success"] = success
    step = grub_step(env, n)
    return step.entry, step.env.get("boot_counter")


def counter_script(n_entries: int) -> list[str]:
    """The counting part of grub.cfg, derived branch by branch from ``grub_step``.

    One flat ``if`` per counter value (GRUB 2.06 mis-parses ``elif`` chains longer than ~50),
    each setting the new counter and entry, then the catch-all for anything else."""
    lines = ['if [ -n "${boot_counter}" -a "${boot_success}" = "0" ]; then',
             "  set ae_counter=", "  set ae_entry=0"]
    for value in ["0", "-1", *[str(i) for i in range(1, LADDER_MAX + 1)]]:
        entry, new = _outcome(value, "0", n_entries)
        lines.append(f'  if [ "${{boot_counter}}" = "{value}" ]; then '
                     f"{_branch(entry, new)} fi")
    other_entry, other_new = _outcome("not-a-number", "0", n_entries)
    lines += [f'  if [ -z "${{ae_counter}}" ]; then {_branch(other_entry, other_new)} fi',
              "  set boot_counter=${ae_counter}",
              "  set default=${ae_entry}",
              "  save_env boot_counter", "fi"]
    # grub_step resets boot_success on every run; userspace sets it to 1 on a healthy boot
    if _outcome("3", "1", n_entries) != (0, "3"):  # the uncounted path has no branch here
        raise AssertionError("grub_step changed: boot_success=1 no longer means 'not counted'")
    lines += ["set boot_success=0", "save_env boot_success"]
    return lines


def _branch(entry: int, counter: str | None) -> str:
    return f"set ae_counter={counter}; set ae_entry={entry};"


def render(entries: list[bls.BootEntry], boot_prefix: str = "/boot") -> str:
    """grub.cfg for ``entries`` (default first); paths in the entries are relative to /boot,
    ``boot_prefix`` is where /boot is as GRUB sees the partition ("" for a /boot partition)."""
    out = ["# written by atomicedge from the boot entries (boot/loader/entries) - do not edit",
           "serial --unit=0 --speed=115200",
           "terminal_input serial console",
           "terminal_output serial",
           "set timeout_style=menu",
           f"set timeout={TIMEOUT}",
           "set default=0",
           "insmod ext2",
           "insmod loadenv",
           # only the counter variables: a stray default= or saved_entry= in grubenv must not
           # choose the entry (grub_step does not look at them either)
           "if [ -s $prefix/grubenv ]; then load_env boot_counter boot_success; fi",
           *counter_script(len(entries)),
           'echo "atomicedge-grub: boot_counter=${boot_counter} default=${default}"', ""]
    for i, e in enumerate(entries):
        title = e.title or f"ostree:{i}"
        out.append(f"menuentry {_q(title)} --id {_q(f'ostree-{i}')} {{")
        out.append(f"  echo {_q(f'atomicedge-grub: booting entry {i}: {title}')}")
        opts = " ".join(_q(o) if _needs_quote(o) else o for o in e.options)
        out.append(f"  linux {boot_prefix}{e.linux} {opts}")
        if e.initrd:
            out.append(f"  initrd {boot_prefix}{e.initrd}")
        out += ["}", ""]
    return "\n".join(out)


def _needs_quote(word: str) -> bool:
    return any(c in word for c in " \t'\"\\$;&|<>(){}#")


def boot_prefix(sysroot_path: Path, boot: Path) -> str:
    """``/boot`` when /boot is a directory of the root file system, "" for a partition (a bind
    mount of the root's own /boot keeps the device number, so it counts as a directory)."""
    try:
        return "" if os.stat(boot).st_dev != os.stat(sysroot_path).st_dev else "/boot"
    except OSError:
        return "/boot"


def enabled(boot: Path) -> bool:
    """A real-GRUB image: ``boot/grub/grub.cfg`` is our symlink to the live loader's menu."""
    link = boot / "grub" / "grub.cfg"
    return link.is_symlink() and os.readlink(link) == CFG_LINK_TARGET


def write(loader_dir: Path, entries: list[bls.BootEntry], prefix: str) -> Path:
    """Write ``loader_dir/grub.cfg`` atomically (before the loader swap makes it live)."""
    path = loader_dir / "grub.cfg"
    atomic_write(path, render(entries, prefix).encode())
    return path


def install_link(boot: Path) -> None:
    """Make ``boot/grub/grub.cfg`` follow the live loader (done once, by the disk builder)."""
    (boot / "grub").mkdir(parents=True, exist_ok=True)
    link = boot / "grub" / "grub.cfg"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(CFG_LINK_TARGET, link)


def checkpoint(boot: Path) -> bool:
    """Freeze and thaw the file system of ``boot`` so its ext4 journal is written home.

    GRUB reads ext4 without replaying the journal: after a power cut, a menu or grubenv that
    is only in the journal is invisible to it (ostree does the same freeze/thaw cycle after
    writing deployments). Only on a booted device (``/run/ostree-booted``); False when the
    file system cannot be frozen (then a clean shutdown's read-only remount does it).
    """
    if not Path("/run/ostree-booted").exists():
        return False
    fd = os.open(boot, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError:
            return False
        fcntl.ioctl(fd, FITHAW, 0)
        return True
    finally:
        os.close(fd)
