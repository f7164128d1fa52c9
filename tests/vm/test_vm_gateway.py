"""The gateway's life on a real boot chain: QEMU (TCG), GRUB, dracut, systemd - ONE VM.

The disk is the session's qcow2 of the composed gateway v1 (``tests/vm/conftest.py``:
``compose/disk.py``, the device code deploys the commit, GRUB BIOS + UEFI, ``--vm-agent`` for
the command channel, ``--dhcp``), as a fresh overlay for this module. One VM boots it (SeaBIOS)
and every check runs inside it through the agent, in the seed demo's order (one booted VM
shared by all the checks keeps the suite's TCG time down):

1. The first boot (issue 13, Must show 1): multi-user through real GRUB, the composed commit
   deployed with its origin, ``/usr`` read-only, ``/var`` the stateroot's, the blueprint's
   users, files, directories and units, ``device status``, the persistent journal; DHCP up
   and the update server reachable; the machine id written into the deployment.
2. v1 boots green; its greenboot check (``01_check_upgrade.sh`` of the gateway blueprints)
   records the first booted commit in ``/etc/greenboot/orig.txt``.
3. v2 (v1 + strace) is published on the host's update server; the device's own agent
   (``/etc/atomicedge/agent.toml`` policy ``stage`` - the seed's AutomaticUpdatePolicy=stage -
   run as ``atomicedge-agent.service``, the seed's ``rpm-ostreed-automatic``) pulls it over HTTP
   and stages it, and the apply service (the seed's ``applyupdate``) reboots. The required
   check fails on v2 (orig.txt differs), so real GRUB counts three boots of v2 in grubenv and
   then boots v1: the fallback boot logs ``FALLBACK BOOT DETECTED``, makes v1 the default, and
   strace is absent (Must show 3). The five boots kept one machine id and one journal.
4. ``orig.txt`` deleted, ``atomicedge device upgrade`` (the seed's ``rpm-ostree upgrade``:
   the agent no longer stages a rolled-back commit by itself) stages v2 again; after the reboot
   v2 is booted, green, ``boot_success=1``, strace present (Must show 2).
5. The same disk boots with OVMF (UEFI).

Performance (issue 13): the time from "update applied" (staged, reboot issued) to "back on the
old OS" (the fallback boot marked successful), and one boot (QEMU start -> agent answers), are
printed with a per-boot breakdown from the console (host clock, polled every 0.2 s).
Nothing is faked: the update server is :class:`atomicedge.publish.serve.Server` on the host's
127.0.0.1, reached by the guest as 10.0.2.2 through QEMU's user network (stays on this machine).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atomicedge.lab import vm
from tests.vm.conftest import BOOT_TIMEOUT, Published

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
NAME = "gw"
GRUB_RE = re.compile(rb"atomicedge-grub: boot_counter=(-?\d*) default=(\d+)")
KTIME_RE = re.compile(rb"^\[\s*(\d+\.\d+)\] ")
ENTRY_RE = re.compile(rb"atomicedge-grub: booting entry (\d+): ([^\r\n]*)")
KERNEL_RE = re.compile(rb"\[\s*0\.0+\] Linux version ")   # lines may start with \r
AGENT_TOML = """policy = "stage"
schedule = "daily"
[apply]
schedule = "Sun *-*-* 03:00:00 UTC"
"""


class Console:
    """Timestamps (host monotonic clock) of the console's lines, read as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._offset = 0
        self._partial = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(0.2)

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        now = time.monotonic()
        with self._lock:
            self._offset += len(data)
            parts = (self._partial + data).split(b"\n")
            self._partial = parts.pop()
            self.lines += [(now, p) for p in parts]

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def wait(self, pattern: bytes, start: int, timeout: float = BOOT_TIMEOUT
             ) -> tuple[int, float, re.Match[bytes]]:
        """First line from index ``start`` matching ``pattern``: (index, time, match)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for i in range(start, len(self.lines)):
                    m = rx.search(self.lines[i][1])
                    if m:
                        return i, self.lines[i][0], m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the console within {timeout:g} s "
                                     f"(see {self.path})")
            if not vm.is_running(NAME):
                raise AssertionError(f"QEMU exited before {pattern!r} (see {self.path})")
            time.sleep(0.2)

    def kernel_zero(self, start: int, end: int) -> float:
        """Host time of the guest kernel's clock zero for the boot in lines [start, end):
        the smallest (host time - kernel timestamp) over its kernel lines (output is only
        ever late, never early)."""
        with self._lock:
            lines = self.lines[start:end]
        zeros = [t - float(m[1]) for t, line in lines if (m := KTIME_RE.match(line))]
        assert zeros, "no kernel lines on the console"
        return min(zeros)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Run:
    """What the module's checks share: the VM's console clock and the measured figures."""

    console: Console
    started: float                  # QEMU start (host monotonic clock)
    boot_seconds: float             # QEMU start -> the agent answers
    figures: dict[str, float] = field(default_factory=dict)
    machine_id: str = ""            # written on the first boot
    first_boot: str = ""            # its boot id


def sh(cmd: str, *, ok: bool = True, timeout: float = 900) -> str:
    res = vm.exec_(NAME, cmd, timeout=timeout)
    if ok:
        assert res.rc == 0, (cmd, res.rc, res.text, res.err.decode(errors="replace"))
    return res.text


def status() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sh("atomicedge device status --json"))
    return data


def booted_checksum() -> str:
    return next(d["checksum"] for d in status()["deployments"] if d["booted"])


def boot_id() -> str:
    return sh("cat /proc/sys/kernel/random/boot_id").strip()


def wait_agent_of_new_boot(old_boot_id: str) -> None:
    """The agent answers from a boot other than ``old_boot_id`` (the old one may still answer
    while it shuts down)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        vm.wait_agent(NAME, max(deadline - time.monotonic(), 1))
        res = vm.exec_(NAME, "cat /proc/sys/kernel/random/boot_id", timeout=30)
        if res.rc == 0 and res.text.strip() != old_boot_id:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the guest did not come back from its reboot")
        time.sleep(1)


def wait_green() -> dict[str, str]:
    """Until this boot's health phases are done and the boot counted as good."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        out = sh("systemctl is-active greenboot-grub2-set-success.service", ok=False).strip()
        if out == "active":
            env: dict[str, str] = status()["grubenv"]
            return env
        if out == "failed" or time.monotonic() > deadline:
            raise AssertionError("the boot did not go green: " + sh(
                "journalctl -b -o cat --no-pager -u atomicedge-healthcheck", ok=False)[-3000:])
        time.sleep(1)


def wait_network() -> None:
    """Until DHCP gave the guest its default route (networkd starts after firewalld)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not sh("ip -4 route show default", ok=False).strip():
        if time.monotonic() > deadline:
            raise AssertionError("no DHCP lease: " + sh("networkctl status --no-pager; "
                                                        "systemctl list-jobs", ok=False))
        time.sleep(1)


def boot_records() -> list[dict[str, Any]]:
    text = sh("cat /var/log/atomicedge/boots.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(v1_qcow2: Path, vm_dir: Path) -> Iterator[Run]:
    start = time.monotonic()
    vm.run(vm.VmSpec(NAME, v1_qcow2), detach=True)
    console = Console(vm.console_path(NAME))
    try:
        vm.wait_agent(NAME, BOOT_TIMEOUT)
        r = Run(console, start, time.monotonic() - start)
        yield r
        print("\n" + report(r))
    finally:
        console.stop()
        vm.kill(NAME)


def report(r: Run) -> str:
    rows = [f"one boot (QEMU start -> agent answers): {r.boot_seconds:.1f} s "
            "(reference 26-31 s idle)"]
    rows += [f"{k}: {v:.1f} s" for k, v in r.figures.items()]
    return "\n".join(rows)



# -- 1. the first boot -------------------------------------------------------------------------

def test_qcow2_boots_to_multi_user_through_real_grub(run: Run) -> None:
    state = sh("systemctl is-system-running --wait", ok=False).strip()
    assert state in ("running", "degraded"), state
    assert sh("systemctl is-active multi-user.target").strip() == "active"
    console = vm.console_path(NAME).read_text(errors="replace")
    assert "atomicedge-grub: booting entry 0" in console       # our grub.cfg ran in GRUB
    cmdline = sh("cat /proc/cmdline")
    assert "root=LABEL=root" in cmdline and "ostree=/ostree/boot." in cmdline
    # a boot that dies in the initramfs or panics reboots, so GRUB's counter gets its next try
    assert {"rd.shell=0", "rd.emergency=reboot", "panic=10"} <= set(cmdline.split())


def test_inside_the_deployment_is_the_composed_commit_read_only_usr_stateroot_var(
        run: Run, gateway_images: Any) -> None:
    st = status()
    me = [d for d in st["deployments"] if d["booted"]]
    assert len(me) == 1 and me[0]["checksum"] == gateway_images.v1
    assert me[0]["origin"] == f"edge:{gateway_images.ref}"
    assert "ro" in sh("findmnt -no OPTIONS /usr").split(",")
    assert sh("touch /usr/x 2>&1", ok=False).strip().endswith("Read-only file system")
    assert sh("stat -c %d:%i /var") == sh("stat -c %d:%i /sysroot/ostree/deploy/debian/var")


def test_inside_the_blueprint_users_files_directories_and_units(run: Run) -> None:
    assert sh("getent passwd core").split(":")[2] == "1000"
    assert "operators" in sh("id -nG core").split()
    assert sh("stat -c '%U %G %a' /etc/gateway/app.conf").split() == ["core", "operators",
                                                                      "640"]
    assert sh("cat /etc/gateway/app.conf") == "listen = 0.0.0.0:8080\n"
    assert sh("stat -c '%U %G %a %F' /etc/gateway").strip().split(maxsplit=3) == [
        "core", "operators", "750", "directory"]
    assert sh("systemctl is-enabled ssh.service").strip() == "enabled"
    assert sh("hostname").strip() == "gateway"


def test_device_status_shows_it_booted_and_the_journal_keeps_the_boot(run: Run) -> None:
    text = sh("atomicedge device status")
    assert text.lstrip().startswith("●") and "Version: 1.0.0" in text   # ● = booted
    assert boot_id().replace("-", "") in sh("journalctl --list-boots --no-pager")
    sh("journalctl --flush")
    assert sh("ls /var/log/journal/*/system.journal").strip()            # persistent, on disk
    assert "atomicedge" in sh("journalctl -b -o cat --no-pager | grep -m1 -i atomicedge")


def test_dhcp_comes_up_at_boot_and_reaches_the_update_server(
        run: Run, served: Published) -> None:
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


def test_the_first_boot_writes_the_machine_id_into_the_deployment(run: Run) -> None:
    """The commit ships ``/etc/machine-id`` empty (compose/ostreeprep.py, as Image Builder's
    edge commits; machine-id(5): not a "first boot", so systemd applies no presets). The root
    is mounted ``rw`` at switch-root, so systemd writes the generated id into the deployment's
    ``/etc`` (no transient overmount from /run)."""
    mid = sh("cat /etc/machine-id").strip()
    assert len(mid) == 32 and int(mid, 16) >= 0, mid
    assert sh("findmnt -n /etc/machine-id", ok=False).strip() == ""
    deployed = sh("cat /sysroot/ostree/deploy/debian/deploy/*.0/etc/machine-id").strip()
    assert deployed == mid
    assert sh("cat /usr/etc/machine-id") == ""        # the commit stays generic
    run.machine_id, run.first_boot = mid, boot_id()


# -- 2-4. the seed's update story --------------------------------------------------------------

def test_v1_boots_green_and_records_its_commit_for_the_seed_check(
        run: Run, gateway_images: Any) -> None:
    env = wait_green()
    assert env.get("boot_success") == "1" and "boot_counter" not in env, env
    assert booted_checksum() == gateway_images.v1
    assert sh("cat /etc/greenboot/orig.txt").strip() == gateway_images.v1
    assert sh("command -v strace", ok=False).strip() == ""
    # systemd stops echoing status once getty owns ttyS0: multi-user's time from the guest's
    # clock, placed on the host's through the kernel's console timestamps
    sh("systemctl is-system-running --wait", ok=False)      # the boot has finished
    reached = int(sh("systemctl show -p ActiveEnterTimestampMonotonic --value "
                     "multi-user.target").strip()) / 1e6
    assert reached > 0
    zero = run.console.kernel_zero(0, run.console.mark())
    run.figures["one boot: QEMU start -> multi-user.target reached"] = (
        zero + reached - run.started)
    print(f"\nv1 boot: QEMU start -> agent answers {run.boot_seconds:.1f} s\n"
          + sh("systemd-analyze time; systemd-analyze blame --no-pager | head -15",
               ok=False))


def test_failing_required_check_three_grub_counted_boots_then_fallback_to_v1(
        run: Run, served: Published, gateway_images: Any) -> None:
    v1, v2 = gateway_images.v1, gateway_images.v2
    served.publish(v2)
    wait_network()
    sh(f"cat > /etc/atomicedge/agent.toml <<'EOF'\n{AGENT_TOML}EOF")
    start = time.monotonic()
    sh("systemctl start atomicedge-agent.service")          # the seed's rpm-ostreed-automatic
    run.figures["agent: HTTP pull + stage of v2 (in the guest)"] = time.monotonic() - start
    st = status()
    staged = [d for d in st["deployments"] if d["staged"]]
    assert [d["checksum"] for d in staged] == [v2], st["deployments"]
    old_boot = boot_id()
    mark = run.console.mark()
    t0 = time.monotonic()
    sh("systemctl start --no-block atomicedge-apply.service")   # the seed's applyupdate

    grub: list[tuple[float, str, int, bytes]] = []       # (time, counter, entry, title)
    phases: list[tuple[float, float]] = []      # (kernel's first line, health verdict) times
    at = mark
    for _ in range(4):
        i, t, m = run.console.wait(GRUB_RE.pattern, at)
        j, _t, e = run.console.wait(ENTRY_RE.pattern, i)
        grub.append((t, m[1].decode(), int(e[1]), e[2]))
        k, tk, _m = run.console.wait(KERNEL_RE.pattern, j)
        at, tv, _m = run.console.wait(rb"Boot Status is (RED|GREEN)", k)
        phases.append((tk, tv))
    _i, t1, _m = run.console.wait(rb"boot marked successful \(boot_success=1\)", at)
    # GRUB's own counting, boot by boot: three tries of v2 (entry 0), then the rollback entry
    assert [(c, e) for _t, c, e, _title in grub] == [("2", 0), ("1", 0), ("0", 0), ("-1", 1)]
    assert all(b"1.1.0" in title for *_x, title in grub[:3]), grub
    assert b"1.0.0" in grub[3][3], grub
    run.figures["update applied -> back on the old OS (fallback boot green)"] = t1 - t0
    for k, (t, c, *_r) in enumerate(grub):
        nxt = grub[k + 1][0] if k + 1 < len(grub) else t1
        run.figures[f"  boot {k + 1} (GRUB boot_counter={c}) -> next step"] = nxt - t
        tk, tv = phases[k]
        run.figures[f"    boot {k + 1}: GRUB menu -> the kernel's first line"] = tk - t
        run.figures[f"    boot {k + 1}: the kernel's first line -> health verdict"] = tv - tk
        run.figures[f"    boot {k + 1}: health verdict -> next step"] = nxt - tv
    run.figures["  reboot issued -> first GRUB run (shutdown incl. finalize)"] = grub[0][0] - t0

    wait_agent_of_new_boot(old_boot)
    wait_green()
    st = status()
    deps = st["deployments"]
    assert deps[0]["checksum"] == v1 and deps[0]["booted"], deps        # default and booted
    assert [d["checksum"] for d in deps] == [v1, v2]
    assert v2 in st["denylist"]
    journal = sh("journalctl -b -o cat --no-pager")
    assert "FALLBACK BOOT DETECTED" in journal
    assert sh("command -v strace", ok=False).strip() == ""
    # userspace saw the counter real GRUB left in grubenv on each boot of v2, and the fallback
    recs = boot_records()[-4:]
    assert [(r["booted"], r["boot_counter"], r["health"]) for r in recs] == [
        (v2, 2, "red"), (v2, 1, "red"), (v2, 0, "red"), (v1, -1, "green")], recs
    assert recs[-1]["fallback"] is True
    for back in (1, 2, 3):                 # the persistent journal kept the three red boots
        assert "Boot Status is RED" in sh(f"journalctl -b -{back} -o cat --no-pager")


def test_the_reboots_and_the_fallback_kept_the_machine_id_and_one_journal(run: Run) -> None:
    """Five boots (v1, three of v2, the fallback to v1, through the three-way /etc merge of a
    new deployment and back): one machine, one journal directory, every boot listed."""
    assert run.machine_id, "the first-boot check did not run"
    assert sh("cat /etc/machine-id").strip() == run.machine_id
    assert sh("ls /var/log/journal").split() == [run.machine_id]
    boots = sh("journalctl --list-boots --no-pager")
    assert run.first_boot.replace("-", "") in boots
    assert len(boots.strip().splitlines()) >= 5, boots


def test_with_orig_txt_deleted_the_update_boots_green_with_strace(
        run: Run, gateway_images: Any) -> None:
    v1, v2 = gateway_images.v1, gateway_images.v2
    sh("rm -f /etc/greenboot/orig.txt")
    wait_network()
    out = sh("atomicedge device upgrade")                 # the seed's rpm-ostree upgrade
    assert "Staged update" in out, out
    old_boot = boot_id()
    mark = run.console.mark()
    t0 = time.monotonic()
    sh("systemctl start --no-block atomicedge-apply.service")
    i, t, m = run.console.wait(GRUB_RE.pattern, mark)
    _j, _t, e = run.console.wait(ENTRY_RE.pattern, i)
    assert (m[1], int(e[1])) == (b"2", 0) and b"1.1.0" in e[2]
    _k, t1, _m = run.console.wait(rb"boot marked successful \(boot_success=1\)", i)
    run.figures["green update: reboot issued -> new OS marked successful"] = t1 - t0
    run.figures["  of which GRUB -> marked successful (one boot of v2)"] = t1 - t
    wait_agent_of_new_boot(old_boot)
    env = wait_green()
    assert env.get("boot_success") == "1" and "boot_counter" not in env, env
    assert "boot_success=1" in sh("cat /boot/grub/grubenv")
    deps = status()["deployments"]
    assert [d["checksum"] for d in deps] == [v2, v1] and deps[0]["booted"], deps
    assert sh("command -v strace").strip() == "/usr/bin/strace"
    assert sh("cat /etc/greenboot/orig.txt").strip() == v2
    assert "Boot Status is GREEN" in sh("journalctl -b -o cat --no-pager")


# -- 5. UEFI -----------------------------------------------------------------------------------

def test_the_same_disk_boots_with_uefi(run: Run, v1_qcow2: Path, gateway_images: Any) -> None:
    assert sh("test -d /sys/firmware/efi && echo efi || echo bios").strip() == "bios"
    sh("sync")
    run.console.stop()
    vm.kill(NAME)
    start = time.monotonic()
    vm.run(vm.VmSpec(NAME, v1_qcow2, uefi=True), detach=True)
    vm.wait_agent(NAME, BOOT_TIMEOUT)
    print(f"\nUEFI boot: QEMU start -> agent answers {time.monotonic() - start:.1f} s")
    assert sh("test -d /sys/firmware/efi && echo efi || echo bios").strip() == "efi"
    state = sh("systemctl is-system-running --wait", ok=False).strip()
    assert state in ("running", "degraded"), state
    assert sh("systemctl is-active multi-user.target").strip() == "active"
    assert "atomicedge-grub: booting entry 0" in vm.console_path(NAME).read_text(
        errors="replace")
    assert booted_checksum() == gateway_images.v2            # the default GRUB entry
    assert boot_id().replace("-", "") in sh("journalctl --list-boots --no-pager")
