"""Lab devices you can live with: boot detached, talk to them, take them down, several at once.

A lab is a directory (default ``/run/atomicedge/lab``, or ``$ATOMICEDGE_LAB_DIR``) plus the
lab network of :mod:`atomicedge.lab.labnet`::

    <lab>/lab.json                 network namespace name and subnet
    <lab>/devices/<name>/          device.json (sysroot, address, netns), state.json (written
                                   by the device's supervisor), console.log, supervisor.log
    <lab>/logs/<name>.console.log  the console of a device after ``lab down``

``up`` attaches the device to the lab network and starts its supervisor
(:mod:`atomicedge.lab.supervisor`) detached; ``exec`` enters the container's namespaces with
``nsenter`` (no host systemd or machined needed); ``down`` presses the power button (clean
poweroff), kills what is left after a grace period and removes the device's namespace and veth.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from atomicedge.device import bls
from atomicedge.device.sysroot import Sysroot
from atomicedge.errors import NotFoundError, ToolError, UsageError
from atomicedge.fsutil import atomic_write
from atomicedge.lab import labnet
from atomicedge.lab.supervisor import pid_alive, supervisor_alive

DEFAULT_DIR = Path("/run/atomicedge/lab")
DEFAULT_NETNS = "atomicedge-lab"
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
       "LANG=C.UTF-8", "TERM=dumb")
START_TIMEOUT = 30.0
T = TypeVar("T")


def default_dir() -> Path:
    return Path(os.environ.get("ATOMICEDGE_LAB_DIR") or DEFAULT_DIR)


@dataclass
class Device:
    name: str
    dir: Path
    config: dict[str, Any]
    state: dict[str, Any]

    @property
    def ip(self) -> str:
        return str(self.config["ip"])

    @property
    def sysroot(self) -> str:
        return str(self.config["sysroot"])

    @property
    def alive(self) -> bool:
        """The supervisor runs (the device is on, booting or rebooting)."""
        return supervisor_alive(self.state.get("pid"), self.dir)

    @property
    def status(self) -> str:
        st = str(self.state.get("state", "starting"))
        if not self.alive and st not in ("stopped", "failed"):
            return "dead"
        return st

    @property
    def leader(self) -> int | None:
        pid = self.state.get("leader")
        return int(pid) if pid and pid_alive(int(pid)) else None


class Lab:
    def __init__(self, path: Path, net: labnet.LabNet) -> None:
        self.path = path
        self.net = net

    @classmethod
    def open(cls, path: Path | None = None, subnet: str | None = None) -> Lab:
        path = (path or default_dir()).absolute()
        meta = path / "lab.json"
        if meta.exists():
            raw = json.loads(meta.read_text())
            if subnet and subnet != raw["subnet"]:
                raise UsageError(f"the lab in {path} uses {raw['subnet']}, not {subnet}",
                                 "take it down (lab down --all) to change its subnet")
            return cls(path, labnet.LabNet(raw["netns"], ipaddress.IPv4Network(raw["subnet"])))
        try:
            net = ipaddress.IPv4Network(subnet or labnet.DEFAULT_SUBNET)
        except ValueError:
            raise UsageError(f"--subnet {subnet!r} is not an IPv4 network",
                             "e.g. 10.213.0.0/24") from None
        if net.prefixlen > 28 or not net.is_private:
            raise UsageError(f"--subnet {net} must be a private network of /28 or more",
                             "e.g. 10.213.0.0/24")
        name = DEFAULT_NETNS if path == DEFAULT_DIR else \
            "ael-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(meta, json.dumps({"netns": name, "subnet": str(net)}) + "\n")
        return cls(path, labnet.LabNet(name, net))

    # -- what is there -------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.path / "devices" / labnet.check_name(name)

    def device(self, name: str) -> Device:
        d = self._dir(name)
        try:
            config = json.loads((d / "device.json").read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no lab device {name!r}",
                                "see `atomicedge lab ls`, or bring it up with `lab up`") from None
        try:
            state = json.loads((d / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            state = {}
        return Device(name, d, config, state)

    def devices(self) -> list[Device]:
        root = self.path / "devices"
        if not root.is_dir():
            return []
        return [self.device(p.name) for p in sorted(root.iterdir())
                if (p / "device.json").exists()]

    def ip(self, name: str) -> str:
        return self.net.host_ip if name == "host" else self.device(name).ip

    # -- up ------------------------------------------------------------------------------

    def up(self, name: str, sysroot_path: Path, ip: str | None = None) -> Device:
        """Boot ``sysroot_path`` as device ``name``, detached; returns once it is starting."""
        if name == "host":
            raise UsageError("'host' names the lab's host side", "pick another device name")
        ddir = self._dir(name)
        sysroot = Sysroot.open(sysroot_path)
        if not bls.read_entries(sysroot.boot / "loader" / "entries"):
            raise NotFoundError(f"{sysroot_path} has no boot entries",
                                "install it first: atomicedge device install --sysroot ...")
        others = [d for d in self.devices() if d.name != name]
        if (ddir / "device.json").exists():
            old = self.device(name)
            if old.alive:
                raise UsageError(f"device {name} is already up",
                                 f"`atomicedge lab down {name}` first")
            self._teardown(old)
        real = str(Path(sysroot_path).resolve())
        for d in others:
            if d.alive and d.sysroot == real:
                raise UsageError(f"{sysroot_path} is already booted as device {d.name}",
                                 "a disk boots in one machine at a time")
        taken = {d.ip for d in others}
        ip = self.net.check_ip(ip, taken) if ip else self.net.next_ip(taken)
        ddir.mkdir(parents=True, exist_ok=True)
        netns = labnet.attach(self.net, name, ip)
        config = {"name": name, "sysroot": real, "ip": ip, "netns": netns,
                  "netns_path": str(labnet.netns_path(netns)), "machine": netns,
                  "created": time.time()}
        atomic_write(ddir / "device.json", json.dumps(config, indent=1) + "\n")
        self._start_supervisor(ddir)
        return self.device(name)

    def _start_supervisor(self, ddir: Path) -> None:
        (ddir / "state.json").unlink(missing_ok=True)
        with open(ddir / "supervisor.log", "ab") as log:
            # setsid --fork: the supervisor is nobody's child here, in a session of its own
            subprocess.run(["setsid", "--fork", sys.executable, "-m",
                            "atomicedge.lab.supervisor", str(ddir)],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                           check=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                state = json.loads((ddir / "state.json").read_text())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
                continue
            if state.get("state") == "failed":
                raise ToolError(f"device {ddir.name} cannot boot: {state.get('error')}")
            return
        tail = (ddir / "supervisor.log").read_text(errors="replace")[-2000:]
        raise ToolError(f"the supervisor of {ddir.name} did not start", stderr=tail)

    # -- talking to a device -------------------------------------------------------------

    def exec_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        """``nsenter`` into the running container's namespaces (mount, pid, net, ...)."""
        d = self.device(name)
        leader = d.leader
        if leader is None:
            raise UsageError(f"device {name} is not running (state: {d.status})",
                             f"wait for it (`lab wait {name}`) or bring it up")
        return ["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w",
                "env", "-i", *ENV, *argv]

    def run(self, name: str, argv: Sequence[str], *, timeout: float | None = 120,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside; its output captured (library use: tests, demo, bench).  On a
        timeout the command is killed too (nsenter forked it into the device's PID namespace:
        left there, it would hold up the device's next shutdown)."""
        proc = subprocess.Popen(self.exec_argv(name, argv), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.PIPE if input_text is not None
                                else subprocess.DEVNULL)
        try:
            out, err = proc.communicate(input_text, timeout=timeout)
        except BaseException:
            for pid in (*_descendants(proc.pid), proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def wait(self, name: str, timeout: float = 180.0,
             until: Callable[[Device], bool] | None = None) -> Device:
        """Until the device runs and its boot has finished (``systemctl is-system-running``
        says running or degraded), and ``until`` (if given) holds.  Polled, never
        ``--wait``: a command waiting inside would hold up a shutdown that comes first."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.device(name)
            if d.status in ("stopped", "failed", "dead"):
                raise ToolError(f"device {name} is {d.status} "
                                f"(last exit {d.state.get('last_rc')})",
                                f"see `atomicedge lab console {name}`")
            if d.leader is not None and (until is None or until(d)):
                try:
                    proc = self.run(name, ["systemctl", "is-system-running"], timeout=30)
                    state = proc.stdout.strip()
                except subprocess.TimeoutExpired:
                    state = ""
                if state in ("running", "degraded") and self.device(name).leader == d.leader:
                    return self.device(name)
            if time.monotonic() > deadline:
                raise ToolError(f"device {name} did not finish booting within {timeout:.0f}s",
                                f"see `atomicedge lab console {name}`")
            time.sleep(0.2)

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """A host command on the lab network (its host side), e.g. a repo server."""
        labnet.create(self.net)
        return ["nsenter", f"--net={labnet.netns_path(self.net.netns)}", "--", *argv]

    def in_host(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` in a thread on the lab's host side (open sockets there)."""
        labnet.create(self.net)
        return labnet.in_netns(self.net.netns, fn)

    # -- down ----------------------------------------------------------------------------

    def down(self, name: str, timeout: float = 120.0) -> None:
        """Clean poweroff (staged updates are finalized), then whatever is left is killed."""
        self._teardown(self.device(name), timeout)

    def down_all(self, timeout: float = 120.0) -> list[str]:
        names = [d.name for d in self.devices()]
        for d in self.devices():
            if d.alive:  # press every power button first: they shut down in parallel
                os.kill(int(d.state["pid"]), signal.SIGTERM)
        for name in names:
            self.down(name, timeout)
        labnet.destroy(self.net)
        return names

    def _teardown(self, d: Device, timeout: float = 120.0) -> None:
        sup = d.state.get("pid") if d.alive else None
        if sup:
            os.kill(int(sup), signal.SIGTERM)
            _wait_dead([int(sup)], timeout)
        # a supervisor that was killed leaves its nspawn running: kill that (and only that)
        pids = [int(p) for p, comm in ((sup, "python"), (d.state.get("nspawn_pid"),
                                                         "systemd-nspawn"),
                                       (d.state.get("leader"), "systemd"))
                if p and _comm(int(p)).startswith(comm)]
        for p in pids:
            os.kill(p, signal.SIGKILL)
        _wait_dead(pids, 30.0)
        labnet.detach(self.net, d.name)
        logs = self.path / "logs"
        logs.mkdir(exist_ok=True)
        if (d.dir / "console.log").exists():
            os.replace(d.dir / "console.log", logs / f"{d.name}.console.log")
        shutil.rmtree(d.dir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return out
    for kid in kids:
        out += [*_descendants(kid), kid]
    return out


def _comm(pid: int) -> str:
    if not pid_alive(pid):
        return ""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_dead(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
