"""The seed's OS update story on a real boot chain: QEMU (TCG), GRUB, dracut, systemd.

ONE VM boots the composed gateway v1 (the session's qcow2, ``tests/vm/conftest.py``) and the
checks run in the seed demo's order:

1. v1 boots green; its greenboot check (``01_check_upgrade.sh`` of the gateway blueprints)
   records the first booted commit in ``/etc/greenboot/orig.txt``.
2. v2 (v1 + strace) is published on the host's update server; the device's own agent
   (``/etc/atomicedge/agent.toml`` policy ``stage`` - the seed's AutomaticUpdatePolicy=stage -
   run as ``atomicedge-agent.service``, the seed's ``rpm-ostreed-automatic``) pulls it over HTTP
   and stages it, and the apply service (the seed's ``applyupdate``) reboots. The required
   check fails on v2 (orig.txt differs), so real GRUB counts three boots of v2 in grubenv and
   then boots v1: the fallback boot logs ``FALLBACK BOOT DETECTED``, makes v1 the default, and
   strace is absent.
3. ``orig.txt`` deleted, ``atomicedge device upgrade`` (the seed's ``rpm-ostree upgrade``:
   the agent no longer stages a rolled-back commit by itself) stages v2 again; after the reboot
   v2 is booted, green, ``boot_success=1``, strace present.

Performance (issue 13): the time from "update applied" (staged, reboot issued) to "back on the
old OS" (the fallback boot marked successful), and one boot (QEMU start -> agent answers), are
printed with a per-boot breakdown from the console (host clock, polled every 0.2 s).
Nothing is faked: the update server is :class:`atomicedge.publish.serve.Server` on the host's
127.0.0.1, reached by the guest as 10.0.2.2 through QEMU's user network.
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
NAME = "gw-update"
GRUB_RE = re.compile(rb"atomicedge-grub: boot_counter=(-?\d*) default=(\d+)")
KTIME_RE = re.compile(rb"^\[\s*(\d+\.\d+)\] ")
ENTRY_RE = re.compile(rb"atomicedge-grub: booting entry (\d+): ([^\r\n]*)")
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
    at = mark
    for _ in range(4):
        i, t, m = run.console.wait(GRUB_RE.pattern, at)
        j, _t, e = run.console.wait(ENTRY_RE.pattern, i)
        grub.append((t, m[1].decode(), int(e[1]), e[2]))
        at = j + 1
    _i, t1, _m = run.console.wait(rb"boot marked successful \(boot_success=1\)", at)
    # GRUB's own counting, boot by boot: three tries of v2 (entry 0), then the rollback entry
    assert [(c, e) for _t, c, e, _title in grub] == [("2", 0), ("1", 0), ("0", 0), ("-1", 1)]
    assert all(b"1.1.0" in title for *_x, title in grub[:3]), grub
    assert b"1.0.0" in grub[3][3], grub
    run.figures["update applied -> back on the old OS (fallback boot green)"] = t1 - t0
    for k, (t, c, *_r) in enumerate(grub):
        nxt = grub[k + 1][0] if k + 1 < len(grub) else t1
        run.figures[f"  boot {k + 1} (GRUB boot_counter={c}) -> next step"] = nxt - t
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
