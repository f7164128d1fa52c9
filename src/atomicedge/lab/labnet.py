"""The lab network: a bridge inside a network namespace of the lab's own, one netns per device.

Layout (all of it inside namespaces this module creates; the host's own interfaces, routes
and firewall are never touched, and nothing routes out of the lab)::

    netns <lab>            bridge "labbr0" = the host side's address (default 10.213.0.1/24)
      └─ veth v<hash> ──── netns <lab>-<device>: "eth0" = the device's address, default route
                           via the host side (which goes nowhere else)

The host side is where ``lab host -- CMD`` runs (a repo server, a registry, curl); each device
boots under systemd-nspawn with ``--network-namespace-path=/run/netns/<lab>-<device>``, so its
address survives the device's reboots as a machine's DHCP reservation would.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from atomicedge.errors import NotFoundError, ToolError, UsageError
from atomicedge.runner import run

NETNS_DIR = Path("/run/netns")
BRIDGE = "labbr0"
DEVICE_IF = "eth0"
DEFAULT_SUBNET = "10.213.0.0/24"
FIRST_DEVICE = 10
_CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
T = TypeVar("T")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"device name {name!r} is not valid",
                         "use 1-31 lower-case letters, digits and '-', e.g. edge1")
    return name


@dataclass(frozen=True)
class LabNet:
    """The names and addresses of one lab network (pure; see :func:`create`)."""

    netns: str                      # the host side's namespace (also the prefix of devices')
    subnet: ipaddress.IPv4Network

    @property
    def host_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    def device_netns(self, name: str) -> str:
        return f"{self.netns}-{check_name(name)}"

    @staticmethod
    def veth(name: str) -> str:
        """The bridge-side end of a device's veth (interface names are at most 15 bytes)."""
        import hashlib
        return "v" + hashlib.sha256(name.encode()).hexdigest()[:10]

    def check_ip(self, ip: str, taken: set[str]) -> str:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise UsageError(f"--ip {ip!r} is not an IPv4 address",
                             f"pick one in {self.subnet}, e.g. "
                             f"{self.subnet.network_address + FIRST_DEVICE}") from None
        if addr not in self.subnet or addr in (self.subnet.network_address,
                                               self.subnet.broadcast_address):
            raise UsageError(f"--ip {ip} is not a device address of the lab's {self.subnet}",
                             f"pick one between .2 and .{self.subnet.num_addresses - 2}")
        if str(addr) == self.host_ip:
            raise UsageError(f"--ip {ip} is the lab host's own address", "pick another one")
        if str(addr) in taken:
            raise UsageError(f"--ip {ip} is already used by another device",
                             "see `atomicedge lab ls`")
        return str(addr)

    def next_ip(self, taken: set[str]) -> str:
        for n in range(FIRST_DEVICE, self.subnet.num_addresses - 1):
            ip = str(self.subnet.network_address + n)
            if ip not in taken:
                return ip
        raise UsageError(f"the lab's {self.subnet} has no free address left",
                         "take a device down first")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return netns_path(name).exists()


def _ip(*args: str, what: str, check: bool = True) -> str:
    return run(["ip", *args], what=what, check=check,
               hint="the lab needs root and iproute2 (deps/apt/lab.txt)").stdout


def create(net: LabNet) -> None:
    """The host side: its namespace, the bridge and the host address (idempotent)."""
    if exists(net.netns) and BRIDGE in _ip("-n", net.netns, "-o", "link", "show",
                                           what="list the lab's links", check=False):
        return
    if not exists(net.netns):
        _ip("netns", "add", net.netns, what=f"create network namespace {net.netns}")
    _ip("-n", net.netns, "link", "set", "lo", "up", what="lab loopback")
    _ip("-n", net.netns, "link", "add", BRIDGE, "type", "bridge", what="create the lab bridge")
    _ip("-n", net.netns, "addr", "add", f"{net.host_ip}/{net.prefixlen}", "dev", BRIDGE,
        what="lab host address")
    _ip("-n", net.netns, "link", "set", BRIDGE, "up", what="lab bridge up")


def attach(net: LabNet, name: str, ip: str) -> str:
    """A device's own namespace with ``eth0`` = ``ip`` on the bridge; returns the netns name."""
    create(net)
    ns = net.device_netns(name)
    veth = net.veth(name)
    detach(net, name)  # leftovers of a crashed run of the same device
    _ip("netns", "add", ns, what=f"create network namespace {ns}")
    try:
        _ip("-n", ns, "link", "set", "lo", "up", what="device loopback")
        _ip("-n", net.netns, "link", "add", veth, "type", "veth", "peer", "name", DEVICE_IF,
            "netns", ns, what="create the device's veth pair")
        _ip("-n", net.netns, "link", "set", veth, "master", BRIDGE, "up",
            what="plug the veth into the bridge")
        _ip("-n", ns, "addr", "add", f"{ip}/{net.prefixlen}", "dev", DEVICE_IF,
            what="device address")
        _ip("-n", ns, "link", "set", DEVICE_IF, "up", what="device link up")
        _ip("-n", ns, "route", "add", "default", "via", net.host_ip, what="device route")
    except ToolError:
        detach(net, name)
        raise
    return ns


def detach(net: LabNet, name: str) -> None:
    """Remove a device's namespace and both ends of its veth (idempotent)."""
    ns = net.device_netns(name)
    if exists(ns):
        _ip("netns", "del", ns, what=f"delete network namespace {ns}")
    if not exists(net.netns):
        return
    # the kernel dismantles a deleted namespace asynchronously (its eth0 takes the peer along)
    deadline = time.monotonic() + 30
    while f" {net.veth(name)}@" in _ip("-n", net.netns, "-o", "link", "show",
                                       what="list the lab's links", check=False):
        _ip("-n", net.netns, "link", "del", net.veth(name), what="delete the device's veth",
            check=False)
        if time.monotonic() > deadline:
            raise ToolError(f"the veth of device {name} does not go away",
                            f"ip -n {net.netns} link del {net.veth(name)}")
        time.sleep(0.1)


def destroy(net: LabNet) -> None:
    if exists(net.netns):
        _ip("netns", "del", net.netns, what=f"delete network namespace {net.netns}")


def addresses(ns: str) -> str:
    """``ip -o addr`` inside ``ns`` (for ``lab ls`` and diagnosis)."""
    return _ip("-n", ns, "-o", "-4", "addr", "show", what=f"addresses of {ns}")


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has joined network namespace ``ns`` (sockets it opens
    belong to the lab; the calling thread and the rest of the process stay where they are)."""
    path = netns_path(ns)
    if not path.exists():
        raise NotFoundError(f"network namespace {ns} does not exist", "bring the lab up first")
    out: list[T] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns {ns}: {os.strerror(e)}")
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            err.append(exc)

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
