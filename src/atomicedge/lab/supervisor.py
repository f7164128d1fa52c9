"""One lab device's supervisor: the machine's power button, firmware and reset line.

``python -m atomicedge.lab.supervisor DEVICE_DIR`` runs detached (``lab up`` starts it).  Per
boot it runs the emulated bootloader (:func:`atomicedge.lab.bootloader.select`: BLS entries,
grubenv, GRUB's boot counter), then systemd-nspawn in the device's own network namespace,
appending the console to ``console.log``.  Exit code 133 (a reboot inside) boots again; a
poweroff (or any other end) stops.  SIGTERM is the power button: SIGRTMIN+4 to the
container's systemd (clean poweroff, so staged updates are finalized as on a real machine),
then, after ``POWEROFF_GRACE`` seconds, SIGKILL.

``state.json`` (atomic) tells ``lab ls``/``exec``/``down`` what runs: the supervisor's and
nspawn's PIDs, the container's PID 1, the boot count and the booted deployment.  The
supervisor is a child subreaper, so nothing it starts is left as a zombie.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import AtomicEdgeError
from atomicedge.fsutil import atomic_write
from atomicedge.lab import bootloader, nspawn

POWEROFF_GRACE = 90.0
MAX_BOOTS = 1000                    # a boot loop ends somewhere
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _die_with_parent() -> None:
    """nspawn gets SIGTERM (an orderly container shutdown) if the supervisor dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def supervisor_alive(pid: int | None, device_dir: Path) -> bool:
    """``pid`` is this device's supervisor (not a recycled PID)."""
    if not pid_alive(pid):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(device_dir).encode() in cmd and b"atomicedge.lab.supervisor" in cmd


class Supervisor:
    def __init__(self, device_dir: Path) -> None:
        self.dir = device_dir
        self.config: dict[str, Any] = json.loads((device_dir / "device.json").read_text())
        self.sysroot = Sysroot.open(self.config["sysroot"])
        self.state: dict[str, Any] = {"pid": os.getpid(), "state": "starting", "boots": 0,
                                      "nspawn_pid": None, "leader": None, "deployment": None,
                                      "entry": None, "last_rc": None, "error": None,
                                      "history": []}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.stop_deadline: float | None = None

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        atomic_write(self.dir / "state.json", json.dumps(self.state, indent=1) + "\n")

    def console(self, line: str) -> None:
        with open(self.dir / "console.log", "a") as f:
            f.write(f"[lab] {line}\n")

    # -- the power button ------------------------------------------------------------------

    def on_term(self, _sig: int, _frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + POWEROFF_GRACE
        leader = self.state.get("leader")
        if leader and pid_alive(leader):
            os.kill(leader, signal.SIGRTMIN + 4)   # systemd: poweroff.target

    def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.state["leader"] is None:
                leader = nspawn.leader_pid(proc.pid)
                if leader:
                    self.save(leader=leader, state="stopping" if self.stopping else "running")
                    if self.stopping:          # the button was pressed while it started
                        os.kill(leader, signal.SIGRTMIN + 4)
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                proc.kill()

    # -- boots -----------------------------------------------------------------------------

    def boot(self, number: int) -> int:
        choice = bootloader.select(self.sysroot)
        flag = nspawn.write_flag(choice, self.dir)
        netns = Path(self.config["netns_path"])
        argv = nspawn.nspawn_argv(self.sysroot, choice, flag, machine=self.config["machine"],
                                  netns=netns)
        dep = choice.deployment_dir.name
        self.console(f"boot {number}: entry {choice.index} (ostree:{choice.index}) "
                     f"{dep} grubenv {choice.grubenv}")
        self.save(state="booting", boots=number, deployment=dep, entry=choice.index,
                  leader=None, grubenv=choice.grubenv)
        with open(self.dir / "console.log", "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.proc = proc
        self.save(nspawn_pid=proc.pid)
        started = time.monotonic()
        try:
            rc = self._wait(proc)
        finally:
            flag.unlink(missing_ok=True)
            self.proc = None
        self.state["history"].append({"boot": number, "entry": choice.index,
                                      "deployment": dep, "rc": rc,
                                      "seconds": round(time.monotonic() - started, 2)})
        self.console(f"boot {number} ended: exit {rc}"
                     f"{' (reboot)' if rc == nspawn.REBOOT_RC else ''}")
        self.save(last_rc=rc, nspawn_pid=None, leader=None)
        return rc

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self.save()
        try:
            for n in range(1, MAX_BOOTS + 1):
                if self.stopping:
                    break
                rc = self.boot(n)
                if rc != nspawn.REBOOT_RC or self.stopping:
                    break
                self.save(state="rebooting")
        except AtomicEdgeError as exc:  # no boot entries, broken grubenv, ...
            self.console(f"cannot boot: {exc}")
            self.save(state="failed", error=str(exc))
            return 1
        self.save(state="stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m atomicedge.lab.supervisor DEVICE_DIR", file=sys.stderr)
        return 2
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
