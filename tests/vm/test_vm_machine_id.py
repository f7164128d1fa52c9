"""A booted disk's identity and network, under QEMU (TCG): one VM, one reboot inside it.

The composed commit ships ``/etc/machine-id`` empty (compose/ostreeprep.py, as Image Builder's
edge commits; machine-id(5): not a "first boot", so systemd applies no presets). The root is
mounted ``rw`` at switch-root, so systemd writes the generated id into the deployment's
``/etc`` on the first boot (no transient overmount), and every later boot - and every later
deployment, through the three-way ``/etc`` merge - keeps it: one journal directory, one
machine in ``journalctl --list-boots``. The disk is the session's gateway v1 (``--dhcp``,
``--vm-agent``; tests/vm/conftest.py), so the same boots show DHCP coming up with
systemd-networkd and the update server answering over it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.errors import ToolError
from atomicedge.lab import vm
from tests.vm.conftest import BOOT_TIMEOUT, Published

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
NAME = "gw-identity"


def sh(cmd: str, *, ok: bool = True) -> str:
    res = vm.exec_(NAME, cmd, timeout=900)
    if ok:
        assert res.rc == 0, (cmd, res.rc, res.text, res.err.decode(errors="replace"))
    return res.text


def boot_id() -> str:
    return sh("cat /proc/sys/kernel/random/boot_id").strip()


@pytest.fixture(scope="module")
def booted(v1_qcow2: Path, vm_dir: Path) -> Iterator[str]:
    start = time.monotonic()
    vm.run(vm.VmSpec(NAME, v1_qcow2), detach=True)
    vm.wait_agent(NAME, BOOT_TIMEOUT)
    print(f"\nBIOS boot: QEMU start -> agent answers {time.monotonic() - start:.1f} s")
    yield NAME
    vm.kill(NAME)  # one TCG guest at a time: the next module boots its own


def reboot() -> None:
    """``systemctl reboot`` in the guest; returns once the agent answers from the new boot."""
    old = boot_id()
    vm.exec_(NAME, "systemctl --no-block reboot", timeout=60)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            res = vm.exec_(NAME, "cat /proc/sys/kernel/random/boot_id", timeout=10,
                           answer_timeout=15)
            if res.rc == 0 and res.text.strip() not in ("", old):
                return
        except (OSError, ToolError):  # the channel closes while the guest goes down
            pass
        assert time.monotonic() < deadline, "the guest did not come back from its reboot"
        time.sleep(1)


def test_dhcp_comes_up_at_boot_and_reaches_the_update_server(
        booted: str, served: Published) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while "10.0.2.15" not in sh("ip -4 -br addr", ok=False):
        assert time.monotonic() < deadline, sh("networkctl --no-pager; systemctl list-jobs",
                                              ok=False)
        time.sleep(1)
    assert sh("systemctl is-active systemd-networkd.service").strip() == "active"
    head = sh(f"curl -sf {served.guest_url}/refs/heads/{served.ref}").strip()
    assert head == served.head()
    state = sh("systemctl is-system-running --wait", ok=False).strip()
    assert state in ("running", "degraded"), state
    assert "start" not in sh("systemctl list-jobs --no-legend", ok=False)


def test_the_first_boot_writes_the_machine_id_into_the_deployment(booted: str) -> None:
    mid = sh("cat /etc/machine-id").strip()
    assert len(mid) == 32 and int(mid, 16) >= 0, mid
    # written to the file itself, not a transient bind mount from /run
    assert sh("findmnt -n /etc/machine-id", ok=False).strip() == ""
    deployed = sh("cat /sysroot/ostree/deploy/debian/deploy/*.0/etc/machine-id").strip()
    assert deployed == mid
    assert sh("cat /usr/etc/machine-id") == ""        # the commit stays generic


def test_a_reboot_keeps_the_machine_id_and_its_journal(booted: str) -> None:
    mid = sh("cat /etc/machine-id").strip()
    first_boot = boot_id()
    sh("journalctl --flush && sync")
    reboot()
    assert boot_id() != first_boot
    assert sh("cat /etc/machine-id").strip() == mid
    assert sh("ls /var/log/journal").split() == [mid]
    boots = sh("journalctl --list-boots --no-pager")
    assert first_boot.replace("-", "") in boots and len(boots.strip().splitlines()) >= 2
