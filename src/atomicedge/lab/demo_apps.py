"""The applications act of ``make demo`` and the two-device app lab it, the tests and
``bench/failover.py`` share.

Two lab devices boot the same ``gateway-apps`` image; what differs is their provisioning
(``device install --provision``: primary/backup, VRRP priority, the VIP). keepalived holds the
VIP on the primary; the app's socket (rootless, user ``core``) listens on VIP:8080 and starts
the container on the first request. A crash is the primary's nspawn and systemd SIGKILLed at
once (``virsh destroy``), then its network namespace removed (the machine and its NIC are gone:
machine-notes 5 — a dead master keeps the VIP on its interface).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge.errors import ToolError
from atomicedge.lab import labnet
from atomicedge.lab.devices import Lab

VRID = 51
PORT = 8080
ATOMICEDGE = str(Path(sys.executable).with_name("atomicedge"))


NSPAWN_SETTINGS = Path("/run/systemd/nspawn")
NAMES = ("edge1", "edge2")


def provision_text(role: str, hostname: str, vip: str, advert: float = 1.0,
                   peers: tuple[str, ...] = ()) -> str:
    """Unicast adverts to the peers: multicast VRRP does not get through the lab bridge
    (the frames reach the other device's eth0 but never its socket; see docs/workloads.md)."""
    unicast = f"unicast_peers = [{', '.join(repr(p) for p in peers)}]\n".replace("'", '"')
    return (f'hostname = "{hostname}"\n\n[vrrp]\nrole = "{role}"\nvip = "{vip}"\n'
            f"virtual_router_id = {VRID}\nadvert_interval = {advert:g}\n"
            + (unicast if peers else "") + f"\n[app]\nport = {PORT}\n")


def cleanup(lab: Lab, names: tuple[str, ...] = NAMES) -> None:
    """All devices down, the lab network gone, the nspawn settings files removed."""
    try:
        lab.down_all(timeout=60)
    finally:
        for name in names:
            (NSPAWN_SETTINGS / f"{lab.net.device_netns(name)}.nspawn").unlink(missing_ok=True)


def grant_net_admin(lab: Lab, name: str) -> Path:
    """keepalived adds the VIP to eth0: the device needs CAP_NET_ADMIN in its own network
    namespace, which nspawn grants with --private-network but not with the lab's
    --network-namespace-path. A trusted settings file (/run/systemd/nspawn/MACHINE.nspawn)
    adds it for this device's machine name only, until :meth:`AppLab.close`."""
    path = NSPAWN_SETTINGS / f"{lab.net.device_netns(name)}.nspawn"
    NSPAWN_SETTINGS.mkdir(parents=True, exist_ok=True)
    path.write_text("# atomicedge lab (demo_apps): keepalived needs it\n"
                    "[Exec]\nCapability=CAP_NET_ADMIN\n")
    return path


def poll(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.02) -> Any:
    """``cond()`` until truthy (polled, never slept on as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ToolError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class AppLab:
    """Two (or more) provisioned devices of one image on one lab network."""

    lab: Lab
    sysroots: dict[str, Path]              # device name -> installed sysroot
    ips: dict[str, str]
    vip: str                               # with prefix, e.g. 10.213.0.100/24
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def vip_ip(self) -> str:
        return self.vip.split("/")[0]

    @property
    def url(self) -> str:
        return f"http://{self.vip_ip}:{PORT}/"

    # -- devices -------------------------------------------------------------------------

    def up(self, name: str, wait: bool = True) -> None:
        grant_net_admin(self.lab, name)
        self.lab.up(name, self.sysroots[name], self.ips[name])
        if wait:
            self.lab.wait(name, timeout=300)

    def crash(self, name: str) -> float:
        """SIGKILL nspawn and the device's systemd at once; returns the moment (monotonic)."""
        d = self.lab.device(name)
        pids = [int(p) for p in (d.state.get("nspawn_pid"), d.state.get("leader"),
                                 d.state.get("pid")) if p]
        t0 = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.lab.down(name, timeout=30)        # the NIC goes with the machine
        return t0

    def close(self) -> None:
        cleanup(self.lab, tuple(self.sysroots))

    # -- the VIP -------------------------------------------------------------------------

    def holds_vip(self, name: str) -> bool:
        ns = self.lab.net.device_netns(name)
        if not labnet.exists(ns):
            return False
        out = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"],
                             capture_output=True, text=True, timeout=10).stdout
        return f" {self.vip} " in out

    def holder(self) -> str | None:
        held = [n for n in self.sysroots if self.holds_vip(n)]
        return held[0] if len(held) == 1 else None

    def wait_holder(self, name: str, timeout: float = 60.0) -> float:
        """Until ``name`` alone holds the VIP; returns the moment it was seen (monotonic)."""
        poll(f"{name} to hold the VIP {self.vip}", lambda: self.holder() == name, timeout,
             every=0.01)
        return time.monotonic()

    def set_advert(self, advert: float) -> None:
        """Rewrite keepalived's advert interval on every running device and restart it
        (the same edit ``--provision`` would have made)."""
        version = 2 if float(advert).is_integer() else 3
        for name in self.sysroots:
            self.lab.run(name, ["sed", "-i", "-e", f"s/^  advert_int .*/  advert_int {advert:g}/",
                                "-e", f"s/^  version .*/  version {version}/",
                                "/etc/keepalived/keepalived.conf"], timeout=30)
            self.lab.run(name, ["systemctl", "restart", "keepalived.service"], timeout=60)

    def failover_after_crash(self, primary: str, backup: str) -> tuple[float, float]:
        """Crash the primary: seconds until the backup holds the VIP; then the primary boots
        again: seconds (from its boot finished) until it has taken the VIP back."""
        t0 = self.crash(primary)
        took = self.wait_holder(backup) - t0
        self.up(primary)
        t1 = time.monotonic()
        back = self.wait_holder(primary) - t1
        return took, back

    def failover_after_stop(self, primary: str, backup: str) -> float:
        """Graceful: keepalived on the primary stopped (it sends priority 0)."""
        t0 = time.monotonic()
        self.lab.run(primary, ["systemctl", "stop", "--no-block", "keepalived.service"])
        took = self.wait_holder(backup) - t0
        self.lab.run(primary, ["systemctl", "start", "keepalived.service"], timeout=60)
        self.wait_holder(primary)
        return took

    # -- the app ---------------------------------------------------------------------------

    def get(self, url: str | None = None, timeout: float = 30.0) -> tuple[str, float]:
        """GET from the lab's host side: (body, seconds)."""
        def fetch() -> tuple[str, float]:
            t0 = time.monotonic()
            with urllib.request.urlopen(url or self.url, timeout=timeout) as resp:
                body = resp.read().decode()
            return body, time.monotonic() - t0
        return self.lab.in_host(fetch)

    def try_get(self, timeout: float = 2.0) -> str | None:
        try:
            return self.get(timeout=timeout)[0]
        except (OSError, urllib.error.URLError):
            return None

    def containers(self, name: str) -> list[str]:
        proc = self.lab.run(name, ["runuser", "-u", "core", "--", "env",
                                   "XDG_RUNTIME_DIR=/run/user/1000", "podman", "ps",
                                   "--format", "{{.Names}}"], timeout=60)
        return proc.stdout.split()

    def user_systemctl(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run(name, ["runuser", "-u", "core", "--", "env",
                                   "XDG_RUNTIME_DIR=/run/user/1000", "systemctl", "--user",
                                   *args], timeout=60)

    def app_ready(self, name: str) -> bool:
        """core's user manager is up and the app's socket listens."""
        return self.user_systemctl(name, "is-active", "app-proxy.socket",
                                   "app-image.service").stdout.split() == ["active", "active"]


def install(work: Path, repo: Path, ref: str, name: str, provision: str) -> Path:
    """``atomicedge device install --provision`` from a local repository."""
    sysroot = work / f"{name}-sysroot"
    prov = work / f"{name}.provision.toml"
    prov.write_text(provision)
    proc = subprocess.run([ATOMICEDGE, "device", "install", "--sysroot", str(sysroot),
                           "--osname", "edge", "--url", str(repo), "--ref", ref,
                           "--provision", str(prov)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise ToolError(f"device install of {name} failed", stderr=proc.stderr)
    return sysroot


def build(lab: Lab, work: Path, repo: Path, ref: str, advert: float = 1.0,
          names: tuple[str, str] = NAMES) -> AppLab:
    """Install the two devices (primary, backup) from ``repo`` and boot them."""
    net = lab.net.subnet
    vip = f"{net.network_address + 100}/{net.prefixlen}"
    ips = {names[0]: str(net.network_address + 10), names[1]: str(net.network_address + 11)}
    roles = {names[0]: "primary", names[1]: "backup"}
    sysroots = {n: install(work, repo, ref, n, provision_text(
        roles[n], n, vip, advert, tuple(ip for m, ip in ips.items() if m != n)))
                for n in names}
    apps = AppLab(lab, sysroots, ips, vip, roles)
    for n in names:
        apps.up(n, wait=False)
    for n in names:
        lab.wait(n, timeout=300)
    return apps


# -- the demo act ------------------------------------------------------------------------------

def _ps(apps: AppLab, console: Any) -> None:
    for name in apps.sysroots:
        ctrs = apps.containers(name) if apps.lab.device(name).leader else ["(powered off)"]
        console.print(f"  podman ps on {name} ({apps.roles[name]}): {' '.join(ctrs) or '-'}")


def _curl(apps: AppLab, console: Any) -> str:
    body, secs = apps.get(timeout=120)
    console.print(f"  curl {apps.url} -> [bold]{body.strip()}[/bold] ({secs:.2f} s)")
    return body


def run(workdir: Path, console: Any, examples: Path | None = None) -> dict[str, Any]:
    """Compose gateway-apps, install it on two devices with different provisioning, then the
    seed's application acts: scale from zero, failover, restart after ``pkill -9 httpd``."""
    from atomicedge.compose.apt import Sources
    from atomicedge.compose.build import ComposeRequest, compose
    from atomicedge.compose.validate import load
    examples = examples or Path(__file__).resolve().parents[3] / "examples"
    ref = "debian/12/x86_64/apps"
    console.print("[bold]compose gateway-apps[/bold] (podman, keepalived, the rootless app)")
    res = compose(ComposeRequest(load(examples / "gateway-apps.toml"), workdir / "repo",
                                 Sources.host(), ref=ref))
    console.print(f"  commit {res.commit[:16]}")
    lab = Lab.open(workdir / "lab")
    out: dict[str, Any] = {}
    try:
        console.print("[bold]install twice[/bold]: edge1 primary, edge2 backup "
                      "(device install --provision), boot both on the lab network")
        apps = build(lab, workdir, workdir / "repo", ref)
        apps.wait_holder("edge1", timeout=180)
        for name in apps.sysroots:
            poll(f"the app socket on {name}", functools.partial(apps.app_ready, name), 180, 0.5)
        console.print(f"  VIP {apps.vip} on edge1; no container runs yet:")
        _ps(apps, console)
        out["first"] = _curl(apps, console)
        _ps(apps, console)
        console.print("[bold]kill the primary[/bold] (nspawn SIGKILLed, like virsh destroy)")
        t0 = apps.crash("edge1")
        out["failover_s"] = apps.wait_holder("edge2") - t0
        console.print(f"  edge2 holds the VIP after {out['failover_s']:.2f} s")
        poll("the app socket on edge2", lambda: apps.app_ready("edge2"), 180, 0.5)
        out["backup"] = _curl(apps, console)
        _ps(apps, console)
        console.print("[bold]pkill -9 httpd[/bold] on edge2: Restart=on-failure")
        apps.lab.run("edge2", ["pkill", "-9", "-x", "httpd"])
        poll("the restart", lambda: apps.user_systemctl(
            "edge2", "show", "-p", "NRestarts", "--value", "httpd.service").stdout.strip()
            == "1", 120, 0.2)
        console.print("  httpd.service NRestarts=1")
        out["restarted"] = _curl(apps, console)
        console.print("[bold]the primary comes back[/bold] and takes the VIP back")
        apps.up("edge1")
        apps.wait_holder("edge1")
        console.print("  edge1 holds the VIP again")
    finally:
        cleanup(lab)
    return out
