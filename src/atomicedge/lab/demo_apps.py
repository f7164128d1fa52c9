"""The applications act of ``make demo`` and the two-device app lab it, the tests and
``bench/failover.py`` share.

Two lab devices boot the same ``gateway-apps`` image; what differs is their provisioning
(``device install --provision``: primary/backup, VRRP priority, the VIP). keepalived holds the
VIP on the primary; the app's socket (rootless, user ``core``) listens on VIP:8080 and starts
the container on the first request. A crash is the primary's nspawn and systemd SIGKILLed at
once (``virsh destroy``), then its network namespace removed (the machine and its NIC are gone:
machine-notes 5 — a dead master keeps the VIP on its interface).

The app's image comes from a registry (:mod:`atomicedge.lab.registry`): v1, v2 and a v3 that
fails to start are built from busybox-static and pushed to a registry on the build host's
loopback; the compose embeds v1 (``[[containers]]`` of the example, pointed at that registry's
port) under the name the device's unit uses, ``registry.edge.internal/app:prod``. The same
storage is then served on the lab network (``<lab host>:5000``) and each device's provisioning
maps ``registry.edge.internal`` there (``[registry]``, insecure: plain HTTP). Moving the tag
``prod`` and starting core's ``podman-auto-update.service`` updates the app.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge.errors import NotFoundError, ToolError
from atomicedge.lab import labnet
from atomicedge.lab.devices import Lab
from atomicedge.lab.registry import Registry

VRID = 51
PORT = 8080
ATOMICEDGE = str(Path(sys.executable).with_name("atomicedge"))


NSPAWN_SETTINGS = Path("/run/systemd/nspawn")
NAMES = ("edge1", "edge2")
REF = "debian/12/x86_64/apps"
# the registry: where the lab serves it, what the image's unit calls it, what the example's
# [[containers]] pulls from at compose time (its port is replaced by the build registry's)
REGISTRY_PORT = 5000
REGISTRY_PREFIX = "registry.edge.internal"
APP_IMAGE = f"{REGISTRY_PREFIX}/app:prod"
BUILD_SOURCE = "127.0.0.1:5000/"
APP_LISTEN = "127.0.0.1:8081"       # where the container's httpd listens (the proxy's upstream)
VERSIONS = ("v1", "v2", "v3")       # v3 fails to start (its command does not exist)


def provision_text(role: str, hostname: str, vip: str, advert: float = 1.0,
                   peers: tuple[str, ...] = (), registry: str | None = None) -> str:
    """Unicast adverts to the peers: multicast VRRP does not get through the lab bridge
    (the frames reach the other device's eth0 but never its socket; see docs/workloads.md).
    ``registry``: the site registry's HOST:PORT, the location of ``registry.edge.internal``."""
    unicast = f"unicast_peers = [{', '.join(repr(p) for p in peers)}]\n".replace("'", '"')
    site = (f'\n[registry]\nlocation = "{registry}"\nprefix = "{REGISTRY_PREFIX}"\n'
            "insecure = true\n") if registry else ""
    return (f'hostname = "{hostname}"\n\n[vrrp]\nrole = "{role}"\nvip = "{vip}"\n'
            f"virtual_router_id = {VRID}\nadvert_interval = {advert:g}\n"
            + (unicast if peers else "") + f"\n[app]\nport = {PORT}\n" + site)


# -- the app's images ------------------------------------------------------------------------

def app_cmd(version: str) -> list[str]:
    """The app: writes its answer, then busybox httpd behind a shell that exits 0 on SIGTERM
    (httpd as PID 1 would ignore it); ``pkill -9 httpd`` makes the shell exit 137."""
    return ["/bin/sh", "-c", f'echo "hello from app {version} on $(hostname)" > /www/index.html'
            f'; trap "exit 0" TERM; httpd -f -p {APP_LISTEN} -h /www & wait $!']


def push_app(reg: Registry, version: str) -> str:
    """``app:<version>`` into ``reg``; v3 is broken: its command does not exist in the image,
    so the container fails to start. Returns the digest."""
    cmd = ["/bin/app-server"] if version == "v3" else app_cmd(version)
    return reg.push_busybox_image(f"app:{version}", files={"www/index.html": ""}, cmd=cmd,
                                  labels={"org.opencontainers.image.version": version})


def seed_registry(reg: Registry) -> dict[str, str]:
    """v1, v2, v3 pushed, ``prod`` on v1; returns tag -> digest."""
    digests = {v: push_app(reg, v) for v in VERSIONS}
    digests["prod"] = reg.retag("app:v1", "app:prod")
    return digests


def apps_blueprint(examples: Path, build_registry: str) -> Any:
    """examples/gateway-apps.toml with its [[containers]] source on ``build_registry``."""
    from atomicedge.compose.validate import parse_text
    path = examples / "gateway-apps.toml"
    text = path.read_text().replace(f'"{BUILD_SOURCE}', f'"{build_registry}/')
    return parse_text(text, str(path))


def compose_apps(repo: Path, storage: Path, examples: Path | None = None,
                 ref: str = REF) -> Any:
    """Registry on the build host's loopback with the app's images (``storage``), the example
    composed against it, the registry stopped again; returns the ComposeResult."""
    from atomicedge.compose.apt import Sources
    from atomicedge.compose.build import ComposeRequest, compose
    examples = examples or Path(__file__).resolve().parents[3] / "examples"
    with Registry.start(storage, "127.0.0.1") as reg:
        seed_registry(reg)
        return compose(ComposeRequest(apps_blueprint(examples, reg.host), repo,
                                      Sources.host(), ref=ref))


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
    registry_storage: Path | None = None   # the app's images (see :meth:`start_registry`)

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

    def sigkill(self, name: str) -> float:
        """The device's supervisor, nspawn and systemd SIGKILLed at once (``virsh destroy``);
        returns the moment (monotonic). Its network namespace stays: see :meth:`crash`."""
        d = self.lab.device(name)
        pids = [int(p) for p in (d.state.get("pid"), d.state.get("nspawn_pid"),
                                 d.state.get("leader")) if p]
        t0 = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return t0

    def crash(self, name: str) -> float:
        """:meth:`sigkill`, then ``lab down`` (the NIC goes with the machine); returns the
        moment of the kill."""
        t0 = self.sigkill(name)
        self.lab.down(name, timeout=30)
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
        return self.user_systemctl(name, "is-active", "app-proxy.socket").stdout.strip() \
            == "active"

    def podman(self, name: str, *args: str, timeout: float = 120) -> \
            subprocess.CompletedProcess[str]:
        """``podman ARGS`` as core on device ``name``."""
        return self.lab.run(name, ["runuser", "-u", "core", "--", "env",
                                   "XDG_RUNTIME_DIR=/run/user/1000", "podman", *args],
                            timeout=timeout)

    # -- the registry and auto-update --------------------------------------------------------

    @property
    def registry_host(self) -> str:
        return f"{self.lab.net.host_ip}:{REGISTRY_PORT}"

    def start_registry(self) -> Registry:
        """The app's registry on the lab network (``<lab host>:5000``), stopped by the caller
        (a context manager)."""
        if self.registry_storage is None:
            raise ToolError("this app lab has no registry storage", "build it with one")
        labnet.create(self.lab.net)
        return Registry.start(self.registry_storage, self.lab.net.host_ip, REGISTRY_PORT,
                              netns=self.lab.net.netns)

    def auto_update(self, name: str) -> str:
        """Start core's ``podman-auto-update.service`` (what its timer does) and wait for it;
        returns what ``podman auto-update`` printed on this run."""
        def log() -> str:
            # as root: --user-unit= would also match _UID=0
            return self.lab.run(name, ["journalctl",
                                       "_SYSTEMD_USER_UNIT=podman-auto-update.service", "-o",
                                       "cat", "--no-pager"], timeout=60).stdout
        before = log()
        self.lab.run(name, ["runuser", "-u", "core", "--", "env",
                            "XDG_RUNTIME_DIR=/run/user/1000", "systemctl", "--user", "start",
                            "podman-auto-update.service"], timeout=600)
        def new() -> str:
            after = log()
            return after[len(before):] if after.startswith(before) else after
        # journald takes the service's output asynchronously: wait for podman's report row
        deadline = time.monotonic() + 60
        out = new()
        while not any(ln.split()[:1] == ["httpd.service"] for ln in out.splitlines()) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
            out = new()
        return out

    @contextlib.contextmanager
    def connection(self) -> Iterator[socket.socket]:
        """An open TCP connection to the VIP's app port: while it is open the proxy (and so
        the container) stays up, whatever the idle timeout."""
        sock = self.lab.in_host(lambda: socket.create_connection((self.vip_ip, PORT), 30))
        try:
            yield sock
        finally:
            sock.close()

    def forget_pulled_images(self, name: str) -> None:
        """Back to what the image ships: the app and its proxy stopped (the socket still
        listens: the next request starts both), every image core pulled removed (the embedded
        ones in the read-only store stay)."""
        self.user_systemctl(name, "stop", "app-proxy.service", "httpd.service")
        pulled = [ln.split()[0] for ln in self.podman(
            name, "images", "--format", "{{.ID}} {{.ReadOnly}}").stdout.splitlines()
            if ln.split()[1:] == ["false"]]
        if pulled:
            self.podman(name, "rmi", "--force", *sorted(set(pulled)))

    def running_image(self, name: str) -> str:
        """The image ID of core's running app container ('' when none runs)."""
        return self.podman(name, "ps", "--no-trunc", "--filter", "name=systemd-httpd",
                           "--format", "{{.ImageID}}").stdout.strip()


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
          names: tuple[str, str] = NAMES, registry_storage: Path | None = None) -> AppLab:
    """Install the two devices (primary, backup) from ``repo`` and boot them; their site
    registry is the lab's (``<lab host>:5000``, served from ``registry_storage`` by
    :meth:`AppLab.start_registry` when wanted)."""
    net = lab.net.subnet
    vip = f"{net.network_address + 100}/{net.prefixlen}"
    ips = {names[0]: str(net.network_address + 10), names[1]: str(net.network_address + 11)}
    roles = {names[0]: "primary", names[1]: "backup"}
    site = f"{lab.net.host_ip}:{REGISTRY_PORT}"
    sysroots = {n: install(work, repo, ref, n, provision_text(
        roles[n], n, vip, advert, tuple(ip for m, ip in ips.items() if m != n), site))
                for n in names}
    apps = AppLab(lab, sysroots, ips, vip, roles, registry_storage)
    for n in names:
        apps.up(n, wait=False)
    for n in names:
        lab.wait(n, timeout=300)
    return apps


# -- the demo act ------------------------------------------------------------------------------

def _powered(apps: AppLab, name: str) -> bool:
    try:
        return apps.lab.device(name).leader is not None
    except NotFoundError:           # crashed: `lab down` took the device away
        return False


def _ps(apps: AppLab, console: Any) -> None:
    for name in apps.sysroots:
        ctrs = apps.containers(name) if _powered(apps, name) else ["(powered off)"]
        console.print(f"  podman ps on {name} ({apps.roles[name]}): {' '.join(ctrs) or '-'}")


def _curl(apps: AppLab, console: Any) -> str:
    body, secs = apps.get(timeout=120)
    console.print(f"  curl {apps.url} -> [bold]{body.strip()}[/bold] ({secs:.2f} s)")
    return body


def _auto_update(apps: AppLab, name: str, console: Any) -> str:
    """Tag v2 as prod in the lab's registry, start core's podman-auto-update.service on
    ``name`` (what its timer does); curl shows v2's answer."""
    assert apps.registry_storage is not None
    with apps.start_registry() as reg:
        console.print(f"  registry {reg.host} (lab network): "
                      f"skopeo copy app:v2 -> app:prod ({reg.retag('app:v2', 'app:prod')[:19]})")
        console.print(f"  systemctl --user start podman-auto-update.service on {name}")
        report = apps.auto_update(name).splitlines()
        rows = [ln for ln in report if ln.split()[:1] in (["UNIT"], ["httpd.service"])]
        for line in rows or report[-8:]:      # no report row: show what podman said instead
            console.print(f"    {line.strip()}")
        return _curl(apps, console)


def run(workdir: Path, console: Any, examples: Path | None = None) -> dict[str, Any]:
    """Compose gateway-apps, install it on two devices with different provisioning, then the
    seed's application acts: scale from zero, failover, restart after ``pkill -9 httpd``,
    auto-update from the registry."""
    console.print("[bold]build the app's images[/bold] v1, v2, v3 from busybox-static, push "
                  "them to a registry on the build host; [bold]compose gateway-apps[/bold] "
                  "(podman, keepalived, the rootless app; v1 embedded by the blueprint's "
                  "containers entry)")
    storage = workdir / "registry"
    res = compose_apps(workdir / "repo", storage, examples)
    console.print(f"  commit {res.commit[:16]}")
    lab = Lab.open(workdir / "lab")
    out: dict[str, Any] = {}
    try:
        console.print("[bold]install twice[/bold]: edge1 primary, edge2 backup "
                      "(device install --provision), boot both on the lab network")
        apps = build(lab, workdir, workdir / "repo", REF, registry_storage=storage)
        apps.wait_holder("edge1", timeout=180)
        for name in apps.sysroots:
            poll(f"the app socket on {name}", functools.partial(apps.app_ready, name), 180, 0.5)
        console.print(f"  VIP {apps.vip} on edge1; no container runs yet (and the registry "
                      "is not running: v1 is in the image):")
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
        # the proxy stays up meanwhile: requests in the moment the container is down are reset
        poll("the app to answer again", lambda: apps.try_get(timeout=10), 120, 0.2)
        out["restarted"] = _curl(apps, console)
        console.print("[bold]the primary comes back[/bold] and takes the VIP back")
        apps.up("edge1")
        apps.wait_holder("edge1")
        poll("the app socket on edge1", lambda: apps.app_ready("edge1"), 180, 0.5)
        console.print("  edge1 holds the VIP again")
        console.print("[bold]auto-update[/bold]: v2 tagged prod in the registry")
        out["updated"] = _auto_update(apps, "edge1", console)
    finally:
        cleanup(lab)
    return out
