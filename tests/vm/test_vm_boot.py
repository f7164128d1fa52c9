"""Real boots under QEMU (TCG): the composed gateway v1 as a qcow2, GRUB, dracut, systemd.

The disk is the session's qcow2 of the composed gateway v1 (``tests/vm/conftest.py``:
``compose/disk.py``, the device code deploys the commit, GRUB BIOS + UEFI, ``--vm-agent`` for
the command channel, ``--dhcp``), as a fresh overlay for this module; ONE VM is booted
(SeaBIOS) and every check runs inside it through the agent; the last test boots the same disk
with OVMF (UEFI). Nothing is faked: kernel, initramfs with
ostree-prepare-root, GRUB's own script reading grubenv, the device agent on the image's python.
The update remote of the disk is an HTTP server on the host's 127.0.0.1, which the guest
reaches as 10.0.2.2 through QEMU's user network (stays on this machine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicedge.lab import vm
from tests.vm.conftest import BOOT_TIMEOUT

# compose (cached trees) + disk build + two boots: far above the suite's 600 s per-test default
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
NAME = "gw"


@pytest.fixture(scope="module")
def image(v1_qcow2: Path) -> Path:
    return v1_qcow2


@pytest.fixture(scope="module")
def booted(image: Path, vm_dir: Path) -> Iterator[str]:
    start = time.monotonic()
    vm.run(vm.VmSpec(NAME, image), detach=True)
    vm.wait_agent(NAME, BOOT_TIMEOUT)
    print(f"\nBIOS boot: QEMU start -> agent answers {time.monotonic() - start:.1f} s")
    yield NAME
    vm.kill(NAME)  # one TCG guest at a time: the next module boots its own


def sh(cmd: str, *, ok: bool = True) -> str:
    res = vm.exec_(NAME, cmd, timeout=900)
    if ok:
        assert res.rc == 0, (cmd, res.rc, res.text, res.err.decode(errors="replace"))
    return res.text


def status() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sh("atomicedge device status --json"))
    return data


def test_qcow2_boots_to_multi_user_through_real_grub(booted: str) -> None:
    state = sh("systemctl is-system-running --wait", ok=False).strip()
    assert state in ("running", "degraded"), state
    assert sh("systemctl is-active multi-user.target").strip() == "active"
    console = vm.console_path(NAME).read_text(errors="replace")
    assert "atomicedge-grub: booting entry 0" in console       # our grub.cfg ran in GRUB
    cmdline = sh("cat /proc/cmdline")
    assert "root=LABEL=root" in cmdline and "ostree=/ostree/boot." in cmdline


def test_inside_the_deployment_is_the_composed_commit_read_only_usr_stateroot_var(
        booted: str, gateway_images: Any) -> None:
    st = status()
    me = [d for d in st["deployments"] if d["booted"]]
    assert len(me) == 1 and me[0]["checksum"] == gateway_images.v1
    assert me[0]["origin"] == f"edge:{gateway_images.ref}"
    assert "ro" in sh("findmnt -no OPTIONS /usr").split(",")
    assert sh("touch /usr/x 2>&1", ok=False).strip().endswith("Read-only file system")
    assert sh("stat -c %d:%i /var") == sh("stat -c %d:%i /sysroot/ostree/deploy/debian/var")


def test_inside_the_blueprint_users_files_directories_and_units(booted: str) -> None:
    assert sh("getent passwd core").split(":")[2] == "1000"
    assert "operators" in sh("id -nG core").split()
    assert sh("stat -c '%U %G %a' /etc/gateway/app.conf").split() == ["core", "operators",
                                                                      "640"]
    assert sh("cat /etc/gateway/app.conf") == "listen = 0.0.0.0:8080\n"
    assert sh("stat -c '%U %G %a %F' /etc/gateway").strip().split(maxsplit=3) == [
        "core", "operators", "750", "directory"]
    assert sh("systemctl is-enabled ssh.service").strip() == "enabled"
    assert sh("hostname").strip() == "gateway"


def test_device_status_shows_it_booted_and_the_journal_keeps_the_boot(booted: str) -> None:
    text = sh("atomicedge device status")
    assert text.lstrip().startswith("●") and "Version: 1.0.0" in text   # ● = booted
    boot_id = sh("cat /proc/sys/kernel/random/boot_id").strip().replace("-", "")
    assert boot_id in sh("journalctl --list-boots --no-pager")
    sh("journalctl --flush")
    assert sh("ls /var/log/journal/*/system.journal").strip()            # persistent, on disk
    assert "atomicedge" in sh("journalctl -b -o cat --no-pager | grep -m1 -i atomicedge")


def test_the_same_disk_boots_with_uefi(booted: str, image: Path) -> None:
    assert sh("test -d /sys/firmware/efi && echo efi || echo bios").strip() == "bios"
    sh("sync")
    vm.kill(NAME)
    start = time.monotonic()
    vm.run(vm.VmSpec(NAME, image, uefi=True), detach=True)
    vm.wait_agent(NAME, BOOT_TIMEOUT)
    print(f"\nUEFI boot: QEMU start -> agent answers {time.monotonic() - start:.1f} s")
    assert sh("test -d /sys/firmware/efi && echo efi || echo bios").strip() == "efi"
    assert "atomicedge-grub: booting entry 0" in vm.console_path(NAME).read_text(
        errors="replace")
    boot_id = sh("cat /proc/sys/kernel/random/boot_id").strip().replace("-", "")
    assert boot_id in sh("journalctl --list-boots --no-pager")
