"""Power cuts under QEMU (TCG): QEMU is SIGKILLed while an update downloads, stages and
finalizes, and the next boot is the old or the new OS - whole - and ``device status`` says which.

One VM, one disk (a qcow2 overlay on the composed gateway v1 disk), QEMU restarted on the same
disk after each cut. Nothing is faked: real GRUB reads grubenv and the menu from the ext4 the
guest wrote, the kernel replays (or not) the journal, the device code on the image's python
stages and finalizes. A cut counts only when it is verified to have interrupted its phase:

* download: the update server (``tests/net/faultserver.py``, on the host's 127.0.0.1, the
  guest's 10.0.2.2) holds every request once a third of the ``.filez`` objects v2 adds were
  sent; the cut comes while the guest's pull waits for the rest (its unit still running);
* staging and finalize: a watcher *of the test* inside the guest (a transient unit, not product
  code) waits until the operation's cgroup has a process and the phase's milestone is on disk
  (staging: the deployment's checkout directory ``.CSUM.N.tmp`` filling ``usr/lib``;
  finalize: the new ``boot/loader.N`` being written, or the swapped ``boot/loader`` written home
  and the old ``boot/loader.M`` being removed), freezes
  that cgroup (``cgroup.freeze``: the operation stops where it is, mid-phase), writes what is on
  disk to the kernel console, and the host cuts the power on reading that line. The evidence
  (still-running process, the staged state file, the loader link, the counter) is asserted.

After each cut the boot is checked whole: GRUB booted an entry, the agent answers, the system
is up, the booted commit is v1 or v2 and is the same in the GRUB menu line, the kernel command
line, ``atomicedge device status`` (text and JSON) and the real ``ostree admin status``; the
sysroot repository passes the real ``ostree fsck``; the package that v2 adds is there exactly
when v2 booted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atomicedge.lab import vm
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from tests.net.faultserver import FaultServer
from tests.vm.conftest import BOOT_TIMEOUT, Published

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
NAME = "cut"
PHASE_TIMEOUT = 900.0    # the guest's pull or checkout reaching the phase to cut
REPO = "/sysroot/ostree/repo"
DEPLOY = "/sysroot/ostree/deploy/debian/deploy"
STAGED = "/sysroot/ostree/atomicedge/staged.json"
FINALIZE_UNIT = "atomicedge-finalize-staged.service"
GRUB_LINE = re.compile(rb"atomicedge-grub: booting entry (\d+): ([^\r\n]*)")

# The test's watcher in the guest (bash builtins in the tight loop, so it reacts within
# microseconds): wait until UNIT runs a process and PRECURSOR holds (coarse), then until
# MILESTONE holds (tight), freeze the unit's cgroup and report on the kernel console.
WATCH = r"""#!/bin/bash
cg=/sys/fs/cgroup/system.slice/@UNIT@
say() { echo "<3>atomicedge-cut: @PHASE@ $*" > /dev/kmsg; }
until read -r _ < "$cg/cgroup.procs" 2>/dev/null && @PRECURSOR@; do sleep 0.05; done
until @MILESTONE@; do
  read -r _ < "$cg/cgroup.procs" 2>/dev/null || { say "missed (the operation ended)"; exit 1; }
done
echo 1 > "$cg/cgroup.freeze"
until grep -q '^frozen 1' "$cg/cgroup.events"; do :; done
procs=$(grep -c . "$cg/cgroup.procs")
staged=$(test -e @STAGED@ && echo present || echo absent)
say "frozen procs=$procs staged=$staged loader=$(readlink /sysroot/boot/loader)" \
    "$(grep -a '^boot_counter=' /sysroot/boot/grub/grubenv || echo boot_counter=unset)" @EVIDENCE@
""".replace("@STAGED@", STAGED)


@dataclass
class Guest:
    image: Path
    logs: Path
    runs: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Boot:
    entry: int
    title: str
    booted: dict[str, Any]
    status: dict[str, Any]

    @property
    def live(self) -> list[dict[str, Any]]:
        return [d for d in self.status["deployments"] if not d["staged"]]

    @property
    def staged(self) -> list[dict[str, Any]]:
        return [d for d in self.status["deployments"] if d["staged"]]


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def feed(served: Published, v1_qcow2: Path, gateway_images: Any) -> Iterator[FaultServer]:
    """The update channel with v2 published, served by the test's pausable server."""
    served.publish(gateway_images.v2)
    with FaultServer(served.repo) as server:
        yield server
        server.resume.set()


@pytest.fixture(scope="module")
def guest(v1_qcow2: Path, vm_dir: Path, feed: FaultServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """The VM on the module's overlay of the v1 disk, booted, its update remote on ``feed``."""
    g = Guest(v1_qcow2, tmp_path_factory.mktemp("cut"))
    boot(g, "first-boot")
    sh(f"ostree --repo={REPO} config set 'remote \"edge\".url' {guest_url(feed)} && sync")
    yield g
    print("\npower-cut timings (s): " + json.dumps(g.timings))
    print("power-cut evidence: " + json.dumps(g.evidence, indent=1))
    vm.kill(NAME)


def guest_url(server: FaultServer) -> str:
    return f"http://10.0.2.2:{server.server_address[1]}"


# -- the VM --------------------------------------------------------------------------------

def sh(cmd: str, *, ok: bool = True, timeout: float = 900) -> str:
    res = vm.exec_(NAME, cmd, timeout=timeout)
    if ok:
        assert res.rc == 0, (cmd, res.rc, res.text, res.err.decode(errors="replace"))
    return res.text


def boot(g: Guest, label: str) -> None:
    """Start QEMU on the disk (console log per run) and wait for the agent."""
    g.runs += 1
    start = time.monotonic()
    vm.run(vm.VmSpec(NAME, g.image, console=g.logs / f"console-{g.runs}-{label}.log"),
           detach=True)
    vm.wait_agent(NAME, BOOT_TIMEOUT)
    g.timings[f"boot {label}"] = round(time.monotonic() - start, 1)


def power_cut_and_boot(g: Guest, label: str) -> None:
    assert vm.kill(NAME), "QEMU was not running at the cut"
    boot(g, label)


def network_up() -> None:
    """The DHCP lease on QEMU's user network (the disk's systemd-networkd, started again when
    its start timed out on a loaded host)."""
    sh("for i in 1 2 3 4 5; do systemctl is-active -q systemd-networkd || "
       "systemctl restart systemd-networkd; "
       "/lib/systemd/systemd-networkd-wait-online --any --timeout=120 && exit 0; done; exit 1")


def status() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sh("atomicedge device status --json"))
    return data


def watch(phase: str, unit: str, precursor: str, milestone: str, evidence: str = "") -> None:
    """Install and start the test's watcher (see WATCH) as a transient unit that the shutdown
    does not stop (DefaultDependencies=no)."""
    script = (WATCH.replace("@UNIT@", unit).replace("@PHASE@", phase)
              .replace("@PRECURSOR@", precursor).replace("@MILESTONE@", milestone)
              .replace("@EVIDENCE@", evidence))
    sh(f"cat > /run/ae-cut-{phase}.sh <<'EOF'\n{script}EOF\n"
       f"systemd-run --unit=ae-cut-{phase} --collect -p DefaultDependencies=no "
       f"/bin/bash /run/ae-cut-{phase}.sh")


def console_size() -> int:
    return vm.console_path(NAME).stat().st_size


def wait_cut(g: Guest, phase: str, start: int) -> dict[str, str]:
    """The watcher's report (raises if it missed the phase, or if GRUB ran again, i.e. the
    guest rebooted without it); the evidence as key=value."""
    path = vm.console_path(NAME)
    end = vm.wait_console(NAME, rf"atomicedge-cut: {phase} (frozen|missed)[^\n]*\n|"
                          r"atomicedge-grub: booting", start=start, timeout=PHASE_TIMEOUT)
    line = path.read_bytes()[:end].decode(errors="replace").splitlines()[-1]
    assert "atomicedge-cut" in line, f"{phase}: the guest rebooted, the watcher saw nothing"
    report = line.split(f"atomicedge-cut: {phase} ", 1)[1].strip()
    assert report.startswith("frozen"), f"{phase}: the watcher missed the phase: {report}"
    ev = dict(kv.split("=", 1) for kv in report.split()[1:] if "=" in kv)
    g.evidence[phase] = ev
    return ev


def whole_boot(images: Any) -> Boot:
    """The boot after a cut is whole; returns what booted (see the module docstring)."""
    console = vm.console_path(NAME).read_bytes()
    menu = GRUB_LINE.findall(console)
    assert len(menu) == 1, f"GRUB booted {len(menu)} entries in this run: {menu}"
    entry, title = int(menu[0][0]), menu[0][1].decode()
    state = sh("systemctl is-system-running --wait", ok=False).strip()
    assert state in ("running", "degraded"), state
    if state == "degraded":   # recorded for the report (a loaded TCG host times units out)
        failed = sh("systemctl --failed --no-legend --plain | cut -d' ' -f1", ok=False).split()
        why = {u: sh(f"journalctl -b -u {u} --no-pager -o cat | tail -n 4", ok=False)
               for u in failed}
        print(f"\ndegraded boot, failed units: {json.dumps(why, indent=1)}")
    st = status()
    booted = [d for d in st["deployments"] if d["booted"]]
    assert len(booted) == 1, st
    me = booted[0]
    assert me["checksum"] in (images.v1, images.v2), me
    b = Boot(entry, title, me, st)
    # the menu: GRUB's entry is this deployment's place in the list, its title its version
    assert b.live[entry]["checksum"] == me["checksum"], (entry, title, st)
    assert me["version"] and f" {me['version']} " in f" {title} ", (title, me)
    # the kernel command line's ostree= path leads to the deployment status calls booted
    target = sh("readlink -f /sysroot$(sed 's/.*ostree=\\([^ ]*\\).*/\\1/' /proc/cmdline)")
    assert target.strip().endswith(f"/{me['checksum']}.{me['serial']}"), target
    text = sh("atomicedge device status")
    mark = text.split("●", 1)[1].split("\n", 3)
    assert f"Commit: {me['checksum']}" in mark[2] and me["version"] in mark[1], text
    assert f"* debian {me['checksum']}.{me['serial']}" in sh("ostree admin status")
    strace = sh("test -x /usr/bin/strace && echo yes || echo no").strip()
    assert strace == ("yes" if me["checksum"] == images.v2 else "no")
    return b


def fsck_clean() -> str:
    out = sh(f"ostree fsck --repo={REPO} 2>&1", timeout=1800)
    return out.strip().splitlines()[-1] if out.strip() else ""


def new_file_objects(images: Any) -> set[str]:
    """The content objects v2 adds to v1 (what an update pull must download)."""
    repo = Repo.open(images.repo)
    new = reachable(repo, images.v2) - reachable(repo, images.v1)
    return {csum for csum, kind in new if kind is ObjectType.FILE}


def object_name(path: str) -> str:
    return path.split("/objects/", 1)[-1].replace("/", "").removesuffix(".filez")


# -- the cuts ------------------------------------------------------------------------------

def test_power_cut_during_download_boots_the_old_os(guest: Guest, feed: FaultServer,
                                                    gateway_images: Any) -> None:
    need = new_file_objects(gateway_images)
    assert len(need) >= 3, "v2 adds too few files to cut its download in the middle"
    network_up()
    feed.pause(after=len(need) // 3)
    start = time.monotonic()
    sh("systemd-run --unit=ae-upgrade --collect atomicedge device upgrade")
    assert feed.paused.wait(PHASE_TIMEOUT), "the guest's pull never got a third of the way"
    # the pull is under way and unfinished: objects sent, the rest held, its unit running
    sent = {object_name(p) for p in feed.sent if p.endswith(".filez")} & need
    unit = sh("systemctl is-active ae-upgrade", ok=False).strip()
    guest.evidence["download"] = {"filez_sent": str(len(sent)), "filez_needed": str(len(need)),
                                  "upgrade_unit": unit}
    guest.timings["download until the cut"] = round(time.monotonic() - start, 1)
    assert 0 < len(sent) < len(need) and unit == "active", guest.evidence["download"]
    assert vm.kill(NAME), "QEMU was not running at the cut"
    feed.resume.set()    # the held requests end (their client is gone)
    boot(guest, "after-download-cut")

    b = whole_boot(gateway_images)
    assert b.booted["checksum"] == gateway_images.v1
    assert [d["checksum"] for d in b.status["deployments"]] == [gateway_images.v1]
    refs = sh(f"ostree --repo={REPO} refs --list && ostree --repo={REPO} rev-parse "
              f"edge:{gateway_images.ref} 2>&1", ok=False)
    assert gateway_images.v2 not in refs, refs    # the interrupted pull moved no ref to v2
    guest.evidence["download"]["fsck"] = fsck_clean()


def test_power_cut_during_staging_boots_the_old_os(guest: Guest, feed: FaultServer,
                                                   gateway_images: Any) -> None:
    network_up()
    tmp = f"{DEPLOY}/.{gateway_images.v2}.*.tmp"
    watch("staging", "ae-upgrade.service", precursor=f"compgen -G '{tmp}' >/dev/null",
          milestone=f"compgen -G '{tmp}/usr/lib/*' >/dev/null",
          evidence=f"tmp=$(cd {DEPLOY} && ls -d .*.tmp 2>/dev/null | wc -l) "
                   f"usr_lib_entries=$(ls {tmp}/usr/lib 2>/dev/null | wc -l)")
    sent_before, offset = len(feed.sent), console_size()
    start = time.monotonic()
    # the partial pull of the previous cut does not stand in the way: this pull completes
    sh("systemd-run --unit=ae-upgrade --collect atomicedge device upgrade")
    ev = wait_cut(guest, "staging", offset)
    guest.timings["pull + checkout until the cut"] = round(time.monotonic() - start, 1)
    ev["resumed_pull_requests"] = str(len(feed.sent) - sent_before)
    # frozen inside prepare(): the checkout directory is not renamed, nothing staged yet
    assert ev["procs"] != "0" and ev["tmp"] == "1" and ev["staged"] == "absent", ev
    assert int(ev["usr_lib_entries"]) > 0, ev
    power_cut_and_boot(guest, "after-staging-cut")

    b = whole_boot(gateway_images)
    assert b.booted["checksum"] == gateway_images.v1
    assert [d["checksum"] for d in b.status["deployments"]] == [gateway_images.v1]
    guest.evidence["staging"]["fsck"] = fsck_clean()


def _finalize_cut(guest: Guest, phase: str, milestone: str) -> dict[str, str]:
    """Reboot with a staged update; cut the power inside its finalize at ``milestone``."""
    # the seed's required check fails any commit but the first one booted; as its operator
    # would, accept the update (the check then records the new commit)
    sh("rm -f /etc/greenboot/orig.txt && sync")
    assert sh(f"systemctl is-active {FINALIZE_UNIT}", ok=False).strip() == "active"
    watch(phase, FINALIZE_UNIT, precursor="true", milestone=milestone)
    start, offset = time.monotonic(), console_size()
    sh("systemd-run --on-active=1 systemctl reboot")
    ev = wait_cut(guest, phase, offset)
    guest.timings[f"reboot until the {phase} cut"] = round(time.monotonic() - start, 1)
    assert ev["procs"] != "0" and ev["staged"] == "present", ev   # finalize had not finished
    power_cut_and_boot(guest, f"after-{phase}-cut")
    return ev


def loaders() -> tuple[str, str]:
    """(live boot/loader.N, the other one the next deployment list is written to)."""
    old = sh("readlink /sysroot/boot/loader").strip()
    return old, f"loader.{1 - int(old[-1])}"


def test_power_cut_while_finalize_writes_the_boot_entries_boots_the_old_os_still_staged(
        guest: Guest, gateway_images: Any) -> None:
    network_up()
    out = sh("atomicedge device upgrade")
    assert "Staged update" in out, out
    st = status()
    assert [(d["checksum"], d["staged"]) for d in st["deployments"]] == [
        (gateway_images.v2, True), (gateway_images.v1, False)], st
    old, new = loaders()
    assert sh(f"test -e /sysroot/boot/{new} && echo left || echo clean").strip() == "clean"
    # the new boot version is being written (after the /etc merge and the counter)
    ev = _finalize_cut(guest, "finalize-entries", milestone=f"[ -d /sysroot/boot/{new}/entries ]")
    assert ev["loader"] == old, ev

    b = whole_boot(gateway_images)
    assert b.booted["checksum"] == gateway_images.v1 and b.entry == 0
    assert [d["checksum"] for d in b.live] == [gateway_images.v1]
    # the update is not lost: still staged, and applied at the next orderly shutdown
    assert [d["checksum"] for d in b.staged] == [gateway_images.v2], b.status
    assert "(staged)" in sh("atomicedge device status")
    assert sh(f"systemctl is-active {FINALIZE_UNIT}", ok=False).strip() == "active"
    guest.evidence["finalize-entries"]["fsck"] = fsck_clean()


def test_power_cut_after_finalize_swapped_the_boot_entries_boots_the_new_os(
        guest: Guest, gateway_images: Any) -> None:
    old, new = loaders()
    # the swap is done and written home (the old boot version is being removed), the staged
    # state not cleared yet
    ev = _finalize_cut(guest, "finalize-swapped", milestone=f"[ ! -e /sysroot/boot/{old} ]")
    assert ev["loader"] == new, ev

    b = whole_boot(gateway_images)
    guest.evidence["finalize-swapped"]["booted"] = b.booted["version"]
    assert [d["checksum"] for d in b.live] == [gateway_images.v2, gateway_images.v1]
    assert b.booted["checksum"] == gateway_images.v2 and b.entry == 0, b
    # finalized: status shows nothing staged although the cut left the state file behind;
    # the next finalize (at shutdown; here its unit stopped by hand) just clears it
    assert not b.staged, b.status
    text = sh("atomicedge device status")
    assert "(rollback)" in text and "(staged)" not in text, text
    assert sh(f"test -e {STAGED} && echo left || echo cleared").strip() == "left"
    sh(f"systemctl stop {FINALIZE_UNIT}")
    assert sh(f"test -e {STAGED} && echo left || echo cleared").strip() == "cleared"
    assert [d["checksum"] for d in status()["deployments"]] == [gateway_images.v2,
                                                                 gateway_images.v1]
    guest.evidence["finalize-swapped"]["fsck"] = fsck_clean()

