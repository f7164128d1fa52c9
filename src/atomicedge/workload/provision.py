"""Per-device provisioning: the settings that make one image into two different devices.

``atomicedge device install ... --provision FILE`` reads a small TOML file (what a kickstart
``%post`` or an Ignition config would carry) and writes its results into the new deployment's
``/etc`` (a device's own state, kept by the /etc merge across updates)::

    hostname = "edge1"

    [vrrp]                        # keepalived: the virtual IP follows the healthy device
    role = "primary"              # primary | backup
    vip = "10.213.0.100/24"
    interface = "eth0"            # default eth0
    virtual_router_id = 51        # 1-255, default 51
    priority = 150                # 1-254; default 150 (primary), 100 (backup)
    advert_interval = 1.0         # seconds, 0.01-40.95; below 1 s or fractional: VRRPv3
    unicast_peers = []            # optional: addresses of the other devices (no multicast)

    [app]                         # the app's socket listens on the VIP
    socket = "app-proxy.socket"   # a user unit of `user` (default app-proxy.socket)
    port = 8080
    user = "core"

    [registry]                    # this site's container registry (registries.conf.d)
    location = "10.213.0.1:5000"  # host[:port] the images are pulled from
    prefix = "registry.edge.internal"   # optional: the name the image's units use for it
    insecure = true               # plain HTTP / unverified TLS (default false)

:func:`parse` is pure (text in, :class:`Provision` out; errors name ``file:line`` and the
key); :func:`etc_files` renders the files (paths relative to ``/etc``); :func:`apply` writes
them atomically under a deployment's ``etc``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge.errors import UsageError
from atomicedge.fsutil import atomic_write

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@-]+\.socket$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
KEYS = {"": {"hostname", "vrrp", "app", "registry"},
        "vrrp": {"role", "vip", "interface", "virtual_router_id", "priority",
                 "advert_interval", "unicast_peers"},
        "app": {"socket", "port", "user"},
        "registry": {"location", "prefix", "insecure"}}
_LOCATION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_PREFIX = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?"
                     r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
REGISTRIES_D = "containers/registries.conf.d/50-atomicedge-site.conf"


@dataclass(frozen=True)
class Vrrp:
    role: str
    vip: ipaddress.IPv4Interface
    interface: str = "eth0"
    virtual_router_id: int = 51
    priority: int = 150
    advert_interval: float = 1.0
    unicast_peers: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        """VRRPv2 carries whole seconds only; anything else needs v3 (centiseconds)."""
        return 2 if float(self.advert_interval).is_integer() else 3


@dataclass(frozen=True)
class App:
    socket: str = "app-proxy.socket"
    port: int = 8080
    user: str = "core"


@dataclass(frozen=True)
class Registry:
    """The site's registry: ``prefix`` (the name images are known by) is pulled from
    ``location``; ``insecure`` allows plain HTTP."""

    location: str
    prefix: str
    insecure: bool = False


@dataclass(frozen=True)
class Provision:
    source: str
    text: str
    hostname: str | None = None
    vrrp: Vrrp | None = None
    app: App | None = None
    registry: Registry | None = None


class _Where:
    """``file:line`` of a key, found in the raw text (tomllib keeps no positions)."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()

    def line(self, table: str, key: str | None = None) -> int:
        current = ""
        header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
        for n, raw in enumerate(self.lines, 1):
            m = header.match(raw)
            if m:
                current = m.group(1)
                if key is None and current == table:
                    return n
                continue
            if key is not None and current == table and re.match(
                    rf"^\s*{re.escape(key)}\s*=", raw):
                return n
        return 1

    def error(self, table: str, key: str | None, message: str, hint: str) -> UsageError:
        name = f"{table}.{key}" if table and key else (key or table)
        return UsageError(f"{self.source}:{self.line(table, key)}: {name}: {message}", hint)


def _get(w: _Where, tbl: dict[str, Any], table: str, key: str, kind: type | tuple[type, ...],
         hint: str, default: Any = None) -> Any:
    if key not in tbl:
        return default
    value = tbl[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise w.error(table, key, f"{value!r} has the wrong type", hint)
    return value


def _unknown(w: _Where, tbl: dict[str, Any], table: str) -> None:
    for key in tbl:
        if key not in KEYS[table]:
            where = f"[{table}]" if table else "the top level"
            raise w.error(table, key, f"unknown key in {where}",
                          f"supported: {', '.join(sorted(KEYS[table]))}")


def _vrrp(w: _Where, tbl: Any) -> Vrrp:
    if not isinstance(tbl, dict):
        raise w.error("", "vrrp", "must be a table", "write [vrrp] with role and vip")
    _unknown(w, tbl, "vrrp")
    role = _get(w, tbl, "vrrp", "role", str, 'role = "primary" or "backup"')
    if role not in ("primary", "backup"):
        raise w.error("vrrp", "role" if "role" in tbl else None,
                      f"{role!r} is not primary or backup" if role else "role is missing",
                      'role = "primary" or role = "backup"')
    vip_text = _get(w, tbl, "vrrp", "vip", str, 'vip = "10.213.0.100/24"')
    try:
        vip = ipaddress.IPv4Interface(vip_text or "")
        if "/" not in (vip_text or ""):
            raise ValueError
    except ValueError:
        raise w.error("vrrp", "vip" if "vip" in tbl else None,
                      f"{vip_text!r} is not an IPv4 address with its prefix" if vip_text
                      else "vip is missing", 'e.g. vip = "10.213.0.100/24"') from None
    iface = _get(w, tbl, "vrrp", "interface", str, 'interface = "eth0"', "eth0")
    if not _IFNAME.match(iface):
        raise w.error("vrrp", "interface", f"{iface!r} is not an interface name",
                      'e.g. interface = "eth0"')
    vrid = _get(w, tbl, "vrrp", "virtual_router_id", int, "an integer 1-255", 51)
    if not 1 <= vrid <= 255:
        raise w.error("vrrp", "virtual_router_id", f"{vrid} is not in 1-255",
                      "the same id on every device of the group")
    prio = _get(w, tbl, "vrrp", "priority", int, "an integer 1-254",
                150 if role == "primary" else 100)
    if not 1 <= prio <= 254:
        raise w.error("vrrp", "priority", f"{prio} is not in 1-254",
                      "the primary higher than the backups (255 is the address owner)")
    advert = float(_get(w, tbl, "vrrp", "advert_interval", (int, float), "seconds, e.g. 0.2",
                        1.0))
    if not 0.01 <= advert <= 40.95 or round(advert * 100) != round(advert * 100, 6):
        raise w.error("vrrp", "advert_interval", f"{advert} is not 0.01-40.95 s in "
                      "centiseconds", "VRRPv3 counts in 1/100 s, e.g. 0.2")
    peers = _get(w, tbl, "vrrp", "unicast_peers", list, 'e.g. ["10.213.0.11"]', [])
    for p in peers:
        try:
            ipaddress.IPv4Address(p)
        except ValueError:
            raise w.error("vrrp", "unicast_peers", f"{p!r} is not an IPv4 address",
                          'e.g. ["10.213.0.11"]') from None
    return Vrrp(role, vip, iface, vrid, prio, advert, tuple(peers))


def _app(w: _Where, tbl: Any) -> App:
    if not isinstance(tbl, dict):
        raise w.error("", "app", "must be a table", "write [app] with port")
    _unknown(w, tbl, "app")
    sock = _get(w, tbl, "app", "socket", str, 'socket = "app-proxy.socket"', "app-proxy.socket")
    if not _UNIT.match(sock):
        raise w.error("app", "socket", f"{sock!r} is not a .socket unit name",
                      'e.g. socket = "app-proxy.socket"')
    port = _get(w, tbl, "app", "port", int, "an integer 1-65535", 8080)
    if not 1 <= port <= 65535:
        raise w.error("app", "port", f"{port} is not a port", "1-65535, e.g. 8080")
    user = _get(w, tbl, "app", "user", str, 'user = "core"', "core")
    if not _USER.match(user):
        raise w.error("app", "user", f"{user!r} is not a user name", 'e.g. user = "core"')
    return App(sock, port, user)


def _registry(w: _Where, tbl: Any) -> Registry:
    if not isinstance(tbl, dict):
        raise w.error("", "registry", "must be a table", "write [registry] with location")
    _unknown(w, tbl, "registry")
    loc = _get(w, tbl, "registry", "location", str, 'location = "10.213.0.1:5000"')
    if not loc or not _LOCATION.match(loc) or int(loc.rpartition(":")[2] if ":" in loc
                                                   else 1) > 65535:
        raise w.error("registry", "location" if loc else None,
                      f"{loc!r} is not HOST[:PORT]" if loc else "location is missing",
                      'e.g. location = "10.213.0.1:5000"')
    prefix = _get(w, tbl, "registry", "prefix", str, 'prefix = "registry.edge.internal"', loc)
    if not _PREFIX.match(prefix):
        raise w.error("registry", "prefix", f"{prefix!r} is not HOST[:PORT][/PATH]",
                      'the registry part of the image names, e.g. "registry.edge.internal"')
    insecure = tbl.get("insecure", False)
    if not isinstance(insecure, bool):
        raise w.error("registry", "insecure", f"{insecure!r} is not true or false",
                      "insecure = true for a plain HTTP registry")
    return Registry(loc, prefix, insecure)


def parse(text: str, source: str = "provision.toml") -> Provision:
    """Validate a provisioning file; :class:`UsageError` names ``source:line`` and the key."""
    w = _Where(source, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = m.group(1) if m else "1"
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise UsageError(f"{source}:{line}: not valid TOML: {msg}",
                         "see docs/workloads.md for the format") from None
    _unknown(w, data, "")
    hostname = _get(w, data, "", "hostname", str, 'hostname = "edge1"')
    if hostname is not None and not _HOSTNAME.match(hostname):
        raise w.error("", "hostname", f"{hostname!r} is not a host name",
                      "lower-case letters, digits and '-', e.g. edge1")
    vrrp = _vrrp(w, data["vrrp"]) if "vrrp" in data else None
    app = _app(w, data["app"]) if "app" in data else None
    registry = _registry(w, data["registry"]) if "registry" in data else None
    if app is not None and vrrp is None:
        raise w.error("app", None, "the app listens on the VIP, but there is no [vrrp]",
                      "add [vrrp] with vip, or remove [app]")
    return Provision(source, text, hostname, vrrp, app, registry)


def keepalived_conf(p: Provision) -> str:
    v = p.vrrp
    assert v is not None
    lines = ["# written by atomicedge device install --provision (per-device settings)",
             "global_defs {", f"  router_id {p.hostname or 'edge'}", "}", "",
             "vrrp_instance APP {",
             f"  state {'MASTER' if v.role == 'primary' else 'BACKUP'}",
             f"  interface {v.interface}",
             f"  virtual_router_id {v.virtual_router_id}",
             f"  priority {v.priority}",
             f"  advert_int {v.advert_interval:g}",
             f"  version {v.version}"]
    if v.unicast_peers:
        lines += ["  unicast_peer {", *(f"    {p}" for p in v.unicast_peers), "  }"]
    lines += ["  virtual_ipaddress {", f"    {v.vip.with_prefixlen} dev {v.interface}", "  }",
              "}"]
    return "\n".join(lines) + "\n"


def registries_conf(r: Registry) -> str:
    """A registries.conf (v2) drop-in: pulls of ``prefix/...`` go to ``location``."""
    return ("# written by atomicedge device install --provision: this site's registry\n"
            f'[[registry]]\nprefix = "{r.prefix}"\nlocation = "{r.location}"\n'
            f"insecure = {'true' if r.insecure else 'false'}\n")


def etc_files(p: Provision) -> dict[str, str]:
    """Paths relative to ``/etc`` -> contents."""
    out = {"atomicedge/provision.toml": p.text}
    if p.hostname:
        out["hostname"] = p.hostname + "\n"
    if p.vrrp:
        out["keepalived/keepalived.conf"] = keepalived_conf(p)
    if p.app and p.vrrp:
        out[f"systemd/user/{p.app.socket}.d/10-listen.conf"] = (
            "# written by atomicedge device install --provision: the VIP's port\n"
            f"[Socket]\nListenStream={p.vrrp.vip.ip}:{p.app.port}\nFreeBind=true\n")
    if p.registry:
        out[REGISTRIES_D] = registries_conf(p.registry)
    return out


def load(path: Path) -> Provision:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--provision {path}: {exc.strerror}",
                         "give the path of a provisioning TOML file") from None
    return parse(text, str(path))


def apply(p: Provision, etc: Path) -> list[Path]:
    """Write the files under ``etc`` (a deployment's /etc), each atomically."""
    written = []
    for rel, text in etc_files(p).items():
        dest = etc / rel
        if etc.resolve() not in dest.resolve().parents:
            raise UsageError(f"{rel}: outside /etc", "internal error in provisioning")
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, text, mode=0o640 if rel.startswith("keepalived/") else 0o644)
        written.append(dest)
    return written
