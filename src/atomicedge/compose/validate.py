"""Parse and validate a blueprint before anything is built: every problem at once, with line + hint.

Why all at once: a compose is slow, so a user fixing one typo per attempt loses minutes each time
(a recurring Image Builder complaint). Why refuse instead of ignore: Image Builder used to silently
drop customizations that make no sense for an OSTree commit; here each such key is an error that
says why (see docs/blueprint.md for the table).

The rules are pure functions of the text; nothing here touches the disk beyond reading the file.
"""

from __future__ import annotations

import difflib
import json
import posixpath
import re
import tomllib
from pathlib import Path
from typing import Any

from atomicedge.compose import lines
from atomicedge.compose.blueprint import (
    DISTROS,
    Blueprint,
    BlueprintError,
    ContainerSpec,
    Customizations,
    DirSpec,
    FileSpec,
    Firewall,
    Group,
    PackageSpec,
    PortSpec,
    Problem,
    Services,
    SshKey,
    User,
    Zone,
)
from atomicedge.compose.containers import check_reference

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
NAME_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
PKG_RE = re.compile(r"^[a-z0-9*?][a-z0-9+.*?-]*$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")
HOST_RE = re.compile(r"^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                     r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
PORT_RE = re.compile(r"^(?:(\d+)(?:-(\d+))?|([a-z][a-z0-9-]*)):(tcp|udp|sctp|dccp)$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
MODE_RE = re.compile(r"^0?[0-7]{3,4}$")

TOP_KEYS = {"name", "description", "version", "distro", "packages", "modules", "groups",
            "containers", "customizations"}
CUSTOM_KEYS = {"hostname", "kernel", "user", "group", "sshkey", "timezone", "locale", "firewall",
               "services", "files", "directories"}

# keys that exist in Image Builder blueprints but are refused here, with the reason
REFUSED_TOP = {
    "enabled_modules": "DNF module streams do not exist in Debian",
    "architecture": "cross-architecture builds are not supported; the host arch is used",
}
REFUSED_CUSTOM = {
    "filesystem": "an edge commit has no disk layout; partitions belong to disk image types",
    "disk": "an edge commit has no disk layout; partitions belong to disk image types",
    "partitioning_mode": "an edge commit has no disk layout",
    "installation_device": "only meaningful for installer images, not for a commit",
    "fdo": "FIDO device onboarding belongs to the simplified installer, not to a commit",
    "ignition": "Ignition belongs to installer/raw images, not to a commit",
    "openscap": "OpenSCAP remediation is not supported on OSTree trees",
    "installer": "Anaconda settings belong to the installer image type",
    "repositories": "build sources are chosen with --mirror/--sources/--offline-repo",
    "rhsm": "Red Hat subscription settings do not apply to Debian",
    "rpm": "Debian packages are not RPMs; trust keys with a package or a file in /etc",
    "dnf": "Debian uses apt, not dnf",
    "fips": "Debian has no FIPS crypto policy to switch on",
    "cacerts": "not supported yet; ship certificates in a package or /etc file",
    "firstboot": "first-boot scripts are not supported yet",
    "containers-storage": "container storage settings are not supported yet",
    "sshd": "write /etc/ssh/sshd_config.d/*.conf with [[customizations.files]]",
    "iso": "only meaningful for installer images",
}
# common misspellings -> what the user most likely meant
ALIASES = {
    "customizations.users": "[[customizations.user]]",
    "customizations.groups": "[[customizations.group]]",
    "customizations.sshkeys": "[[customizations.sshkey]]",
    "customizations.file": "[[customizations.files]]",
    "customizations.directory": "[[customizations.directories]]",
    "customizations.service": "[customizations.services]",
    "customizations.firewalld": "[customizations.firewall]",
    "package": "[[packages]]",
    "group": "[[groups]]",
}
# files that the user customizations own; writing them would clobber the accounts
MANAGED_FILES = {"/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/fstab",
                 "/etc/hostname", "/etc/machine-id"}


class _Checker:
    """Collects problems while converting the raw dict into the model."""

    def __init__(self, source: str, positions: dict[str, int]) -> None:
        self.source = source
        self.positions = positions
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(path, message, hint, lines.locate(self.positions, path)))

    # ---- typed getters ------------------------------------------------------------------
    def typed(self, table: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...],
              what: str, default: Any = None) -> Any:
        if key not in table:
            return default
        value = table[key]
        if (isinstance(value, bool) and kind is int) or not isinstance(value, kind):
            self.add(f"{path}.{key}" if path else key,
                     f"must be {what}, got {type(value).__name__} {value!r}",
                     f"write {key} = {_example(what)}")
            return default
        return value

    def text(self, table: dict[str, Any], key: str, path: str, default: Any = None) -> Any:
        return self.typed(table, key, path, str, "a string", default)

    def strlist(self, table: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = self.typed(table, key, path, list, "a list of strings", [])
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            self.add(f"{path}.{key}", f"must be a list of strings, has {bad[0]!r}",
                     f'write {key} = ["a", "b"]')
            return ()
        return tuple(value)

    def table_list(self, table: dict[str, Any], key: str, path: str,
                   header: str) -> list[tuple[str, dict[str, Any]]]:
        value = table.get(key, [])
        if isinstance(value, dict):
            self.add(path, "must be an array of tables", f"write [[{path}]], not [{path}]")
            return []
        if not isinstance(value, list):
            self.add(path, f"must be an array of tables, got {type(value).__name__}",
                     f"write [[{header}]] sections")
            return []
        out = []
        for idx, item in enumerate(value):
            if not isinstance(item, dict):
                self.add(f"{path}[{idx}]", "must be a table", f"write [[{header}]] sections")
                continue
            out.append((f"{path}[{idx}]", item))
        return out

    def subtable(self, table: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = table.get(key, {})
        if not isinstance(value, dict):
            self.add(path, f"must be a table, got {type(value).__name__}", f"write [{path}]")
            return {}
        return value

    def unknown(self, table: dict[str, Any], allowed: set[str], path: str,
                refused: dict[str, str] | None = None) -> None:
        for key in table:
            full = f"{path}.{key}" if path else key
            if key in allowed:
                continue
            if refused and key in refused:
                self.add(full, "not supported for edge-commit images", refused[key])
            elif full in ALIASES:
                self.add(full, "unknown key", f"did you mean {ALIASES[full]}?")
            else:
                close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else \
                    f"supported keys here: {', '.join(sorted(allowed))}"
                self.add(full, "unknown key", hint)


def _example(what: str) -> str:
    return {"a string": '"text"', "an integer": "1000", "a boolean": "true",
            "a list of strings": '["a", "b"]'}.get(what, "...")


# ---- sections ----------------------------------------------------------------------------
def _packages(c: _Checker, raw: dict[str, Any], key: str) -> tuple[PackageSpec, ...]:
    out = []
    names: set[tuple[str, str]] = set()
    header = "packages" if key != "groups" else "groups"
    for path, item in c.table_list(raw, key, key, header):
        allowed = {"name", "version"} if key != "groups" else {"name"}
        c.unknown(item, allowed, path)
        name = c.text(item, "name", path)
        if name is None:
            if "name" not in item:
                c.add(path, "entry has no name", f'add name = "..." to this [[{header}]]')
            continue
        version = c.text(item, "version", path, "*") or "*"
        if key != "groups" and not PKG_RE.match(name):
            c.add(f"{path}.name", f"{name!r} is not a valid Debian package name or glob",
                  "lower case letters, digits and + . - only")
            continue
        if key == "groups" and not re.match(r"^[a-z0-9][a-z0-9+.-]*$", name):
            c.add(f"{path}.name", f"{name!r} is not a valid group (Debian task) name",
                  'use a task name such as "ssh-server"')
            continue
        if (name, version) in names:
            c.add(f"{path}.name", f"package {name!r} listed twice", "remove one entry")
        names.add((name, version))
        out.append(PackageSpec(name, version, lines.locate(c.positions, f"{path}.name")))
    return tuple(out)


def _containers(c: _Checker, raw: dict[str, Any],
                packages: tuple[PackageSpec, ...]) -> tuple[ContainerSpec, ...]:
    """``[[containers]]`` (osbuild's keys): fully qualified references, one entry per name."""
    out: list[ContainerSpec] = []
    names: set[str] = set()
    for path, item in c.table_list(raw, "containers", "containers", "containers"):
        c.unknown(item, {"source", "name", "tls-verify"}, path)
        source = c.text(item, "source", path)
        if source is None:
            if "source" not in item:
                c.add(path, "container has no source",
                      'add source = "registry.example.com/app:v1"')
            continue
        name = c.text(item, "name", path)
        tls = c.typed(item, "tls-verify", path, bool, "a boolean", True)
        bad = [(f"{path}.source", check_reference(source))]
        if name is not None:
            bad.append((f"{path}.name", check_reference(name, allow_digest=False)))
        for where, problem in bad:
            if problem:
                c.add(where, problem, "write REGISTRY[:PORT]/PATH[:TAG], e.g. "
                      '"registry.example.com:5000/app:v1" (source may end in @sha256:...)')
        if any(p for _, p in bad):
            continue
        stored = name or source
        if stored in names:
            c.add(f"{path}.{'name' if name else 'source'}", f"{stored!r} is stored twice",
                  "give one of them another name")
        names.add(stored)
        out.append(ContainerSpec(source, name, bool(tls)))
    if out and not any(p.name == "podman" for p in packages):
        c.add("containers", "embedded images need podman on the device",
              'add [[packages]] name = "podman"')
    return tuple(out)


def _int_field(c: _Checker, item: dict[str, Any], key: str, path: str) -> int | None:
    value = c.typed(item, key, path, int, "an integer")
    if value is not None and value < 0:
        c.add(f"{path}.{key}", f"must not be negative, got {value}", f"use {key} = 1000")
        return None
    return value


def _users(c: _Checker, cust: dict[str, Any]) -> tuple[User, ...]:
    users: list[User] = []
    seen_names: set[str] = set()
    seen_uids: set[int] = set()
    allowed = {"name", "description", "password", "key", "home", "shell", "groups", "uid", "gid",
               "expiredate", "force_password_reset"}
    for path, item in c.table_list(cust, "user", "customizations.user", "customizations.user"):
        c.unknown(item, allowed, path)
        name = c.text(item, "name", path)
        if name is None:
            if "name" not in item:
                c.add(path, "user has no name", 'add name = "admin"')
            continue
        if not USER_RE.match(name) or len(name) > 32:
            c.add(f"{path}.name", f"{name!r} is not a valid user name",
                  "lower case, start with a letter, at most 32 characters")
        if name in seen_names:
            c.add(f"{path}.name", f"duplicate user {name!r}", "each user may appear once")
        seen_names.add(name)
        uid = _int_field(c, item, "uid", path)
        if uid is not None and uid in seen_uids:
            c.add(f"{path}.uid", f"uid {uid} used twice", "give each user its own uid")
        if uid is not None:
            seen_uids.add(uid)
        home = c.text(item, "home", path)
        shell = c.text(item, "shell", path)
        for key, value in (("home", home), ("shell", shell)):
            if value is not None and not value.startswith("/"):
                c.add(f"{path}.{key}", f"{value!r} is not an absolute path", f'e.g. {key} = "/..."')
        password = c.text(item, "password", path)
        users.append(User(
            name=name, description=c.text(item, "description", path), password=password,
            key=c.text(item, "key", path), home=home, shell=shell,
            groups=c.strlist(item, "groups", path), uid=uid, gid=_int_field(c, item, "gid", path),
            expiredate=_int_field(c, item, "expiredate", path),
            force_password_reset=bool(c.typed(item, "force_password_reset", path, bool,
                                              "a boolean", False))))
    return tuple(users)


def _groups(c: _Checker, cust: dict[str, Any]) -> tuple[Group, ...]:
    groups: list[Group] = []
    names: set[str] = set()
    gids: set[int] = set()
    for path, item in c.table_list(cust, "group", "customizations.group", "customizations.group"):
        c.unknown(item, {"name", "gid"}, path)
        name = c.text(item, "name", path)
        if name is None:
            if "name" not in item:
                c.add(path, "group has no name", 'add name = "operators"')
            continue
        if not USER_RE.match(name):
            c.add(f"{path}.name", f"{name!r} is not a valid group name", "lower case letters")
        gid = _int_field(c, item, "gid", path)
        if name in names:
            c.add(f"{path}.name", f"duplicate group {name!r}", "each group may appear once")
        if gid is not None and gid in gids:
            c.add(f"{path}.gid", f"gid {gid} used twice", "give each group its own gid")
        names.add(name)
        if gid is not None:
            gids.add(gid)
        groups.append(Group(name, gid))
    return tuple(groups)


def _sshkeys(c: _Checker, cust: dict[str, Any]) -> tuple[SshKey, ...]:
    out = []
    for path, item in c.table_list(cust, "sshkey", "customizations.sshkey",
                                   "customizations.sshkey"):
        c.unknown(item, {"user", "key"}, path)
        user, key = c.text(item, "user", path), c.text(item, "key", path)
        if user is None or key is None:
            if "user" not in item or "key" not in item:
                c.add(path, "sshkey needs both user and key",
                      'user = "root", key = "ssh-ed25519 ..."')
            continue
        out.append(SshKey(user, key))
    return tuple(out)


def _mode(c: _Checker, item: dict[str, Any], path: str, default: int) -> int:
    value = c.text(item, "mode", path)
    if value is None:
        return default
    if not MODE_RE.match(value):
        c.add(f"{path}.mode", f"{value!r} is not an octal mode string", 'write mode = "0644"')
        return default
    return int(value, 8)


def _owner(c: _Checker, item: dict[str, Any], key: str, path: str) -> str | int:
    value = item.get(key, "root")
    if isinstance(value, bool) or not isinstance(value, str | int):
        c.add(f"{path}.{key}", f"must be a name or a numeric id, got {value!r}",
              f'write {key} = "root"')
        return "root"
    return value


def _check_path(c: _Checker, path: str, value: str, kind: str) -> bool:
    if not value.startswith("/"):
        c.add(f"{path}.path", f"{value!r} is not an absolute path", f'write path = "/etc/{value}"')
        return False
    norm = posixpath.normpath(value)
    if norm != value.rstrip("/") or "/../" in value + "/" or "//" in value:
        c.add(f"{path}.path", f"{value!r} is not a normalized path", f"write {norm!r}")
        return False
    if not (norm == "/etc" or norm.startswith("/etc/")) or norm == "/etc":
        where = ("under /usr the tree is read-only and owned by packages"
                 if norm.startswith("/usr")
                 else "only /etc is carried by the commit and merged on update")
        c.add(f"{path}.path", f"{kind} {value!r} is outside /etc", where)
        return False
    if norm in MANAGED_FILES:
        c.add(f"{path}.path", f"{value!r} is managed by the build",
              "use user/group/hostname customizations instead")
        return False
    return True


def _files(c: _Checker, cust: dict[str, Any]) -> tuple[FileSpec, ...]:
    out: list[FileSpec] = []
    for path, item in c.table_list(cust, "files", "customizations.files", "customizations.files"):
        c.unknown(item, {"path", "mode", "user", "group", "data"}, path,
                  {"uri": "fetching content from a URI is not supported; inline it as data",
                   "ensure_parents": "only directories take ensure_parents; "
                                     "add a [[customizations.directories]] entry"})
        value = c.text(item, "path", path)
        if value is None:
            if "path" not in item:
                c.add(path, "file has no path", 'add path = "/etc/..."')
            continue
        if not _check_path(c, path, value, "file"):
            continue
        data = c.text(item, "data", path, "")
        out.append(FileSpec(value, data or "", _mode(c, item, path, 0o644),
                            _owner(c, item, "user", path), _owner(c, item, "group", path)))
    return tuple(out)


def _dirs(c: _Checker, cust: dict[str, Any]) -> tuple[DirSpec, ...]:
    out: list[DirSpec] = []
    for path, item in c.table_list(cust, "directories", "customizations.directories",
                                   "customizations.directories"):
        c.unknown(item, {"path", "mode", "user", "group", "ensure_parents"}, path)
        value = c.text(item, "path", path)
        if value is None:
            if "path" not in item:
                c.add(path, "directory has no path", 'add path = "/etc/..."')
            continue
        if not _check_path(c, path, value, "directory"):
            continue
        ensure = c.typed(item, "ensure_parents", path, bool, "a boolean", False)
        out.append(DirSpec(value, _mode(c, item, path, 0o755), _owner(c, item, "user", path),
                           _owner(c, item, "group", path), bool(ensure)))
    return tuple(out)


def _firewall(c: _Checker, cust: dict[str, Any]) -> Firewall:
    fw = c.subtable(cust, "firewall", "customizations.firewall")
    base = "customizations.firewall"
    c.unknown(fw, {"ports", "services", "zones"}, base)
    ports = []
    for port in c.strlist(fw, "ports", base):
        m = PORT_RE.match(port)
        bad_range = m and m.group(2) and int(m.group(2)) < int(m.group(1))
        too_big = m and any(g and int(g) > 65535 for g in (m.group(1), m.group(2)))
        if not m or bad_range or too_big:
            c.add(f"{base}.ports", f"{port!r} is not PORT:PROTO",
                  'write "8080:tcp", "30000-32767:udp" or "ssh:tcp"')
            continue
        ports.append(PortSpec(m.group(1) + (f"-{m.group(2)}" if m.group(2) else "")
                              if m.group(1) else m.group(3), m.group(4)))
    svc = c.subtable(fw, "services", f"{base}.services")
    c.unknown(svc, {"enabled", "disabled"}, f"{base}.services")
    zones = []
    for path, item in c.table_list(fw, "zones", f"{base}.zones", f"{base}.zones"):
        c.unknown(item, {"name", "sources"}, path)
        name = c.text(item, "name", path)
        if name:
            zones.append(Zone(name, c.strlist(item, "sources", path)))
    return Firewall(tuple(ports), c.strlist(svc, "enabled", f"{base}.services"),
                    c.strlist(svc, "disabled", f"{base}.services"), tuple(zones))


def _services(c: _Checker, cust: dict[str, Any]) -> Services:
    base = "customizations.services"
    svc = c.subtable(cust, "services", base)
    c.unknown(svc, {"enabled", "disabled", "masked"}, base)
    lists = {k: c.strlist(svc, k, base) for k in ("enabled", "disabled", "masked")}
    for key, units in lists.items():
        for unit in units:
            if not UNIT_RE.match(unit):
                c.add(f"{base}.{key}", f"{unit!r} is not a systemd unit name",
                      'e.g. "sshd.service"')
    both = set(lists["enabled"]) & (set(lists["disabled"]) | set(lists["masked"]))
    for unit in sorted(both):
        c.add(f"{base}.enabled", f"{unit!r} is both enabled and disabled/masked", "pick one")
    return Services(lists["enabled"], lists["disabled"], lists["masked"])


def _customizations(c: _Checker, raw: dict[str, Any]) -> Customizations:
    cust = c.subtable(raw, "customizations", "customizations")
    c.unknown(cust, CUSTOM_KEYS, "customizations", REFUSED_CUSTOM)
    hostname = c.text(cust, "hostname", "customizations")
    if hostname is not None and not HOST_RE.match(hostname):
        c.add("customizations.hostname", f"{hostname!r} is not a valid host name",
              "letters, digits, dashes and dots")
    kernel = c.subtable(cust, "kernel", "customizations.kernel")
    c.unknown(kernel, {"name", "append"}, "customizations.kernel")
    tz = c.subtable(cust, "timezone", "customizations.timezone")
    c.unknown(tz, {"timezone", "ntpservers"}, "customizations.timezone")
    zone = c.text(tz, "timezone", "customizations.timezone")
    if zone is not None and not re.match(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$", zone):
        c.add("customizations.timezone.timezone", f"{zone!r} is not a time zone name",
              'e.g. "Europe/Paris" or "UTC"')
    locale = c.subtable(cust, "locale", "customizations.locale")
    c.unknown(locale, {"languages", "keyboard"}, "customizations.locale")
    users = _users(c, cust)
    groups = _groups(c, cust)
    sshkeys = _sshkeys(c, cust)
    known_users = {u.name for u in users} | {"root"}
    for idx, key in enumerate(sshkeys):
        if key.user not in known_users:
            c.add(f"customizations.sshkey[{idx}].user", f"user {key.user!r} is not defined",
                  "add it as a [[customizations.user]] first")
    return Customizations(
        hostname=hostname, kernel_name=c.text(kernel, "name", "customizations.kernel"),
        kernel_append=c.text(kernel, "append", "customizations.kernel"),
        users=users, groups=groups, sshkeys=sshkeys, timezone=zone,
        ntpservers=c.strlist(tz, "ntpservers", "customizations.timezone"),
        languages=c.strlist(locale, "languages", "customizations.locale"),
        keyboard=c.text(locale, "keyboard", "customizations.locale"),
        firewall=_firewall(c, cust), services=_services(c, cust),
        files=_files(c, cust), directories=_dirs(c, cust))


def _cross_checks(c: _Checker, custom: Customizations) -> None:
    file_paths = [f.path for f in custom.files]
    dir_paths = [d.path for d in custom.directories]
    for idx, p in enumerate(file_paths):
        if p in file_paths[:idx]:
            c.add(f"customizations.files[{idx}].path", f"{p!r} written twice", "merge the entries")
        if p in dir_paths:
            c.add(f"customizations.files[{idx}].path", f"{p!r} is also a directory",
                  "a path is either a file or a directory")


def parse_text(text: str, source: str = "<blueprint>") -> Blueprint:
    """Parse TOML (or JSON when it starts with ``{``) and validate; raise BlueprintError."""
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BlueprintError(source, [Problem("<file>", f"not valid JSON: {exc.msg}",
                                                  "check quotes and commas", exc.lineno)]) from None
        positions = lines.json_positions(text)
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"line (\d+)", str(exc))
            raise BlueprintError(source, [Problem("<file>", f"not valid TOML: {exc}",
                                                  "check quoting and [section] headers",
                                                  int(m.group(1)) if m else None)]) from None
        positions = lines.toml_positions(text)
    if not isinstance(raw, dict):
        raise BlueprintError(source, [Problem("<file>", "top level must be a table")])
    return from_dict(raw, source, positions)


def from_dict(raw: dict[str, Any], source: str = "<blueprint>",
              positions: dict[str, int] | None = None) -> Blueprint:
    c = _Checker(source, positions or {})
    c.unknown(raw, TOP_KEYS, "", REFUSED_TOP)
    name = c.text(raw, "name", "")
    if name is None and "name" not in raw:
        c.add("name", "missing", 'add name = "my-image" at the top')
    elif name is not None and not NAME_RE.match(name):
        c.add("name", f"{name!r} has characters outside [a-zA-Z0-9._-]", "e.g. name = \"gateway\"")
    version = c.text(raw, "version", "", "0.0.0") or "0.0.0"
    if not SEMVER.match(version):
        c.add("version", f"{version!r} is not a semantic version", 'write version = "1.2.0"')
    distro = c.text(raw, "distro", "", "") or "debian-12"
    if distro not in DISTROS:
        c.add("distro", f"{distro!r} is not a supported distribution",
              f"supported: {', '.join(sorted(DISTROS))}")
        distro = "debian-12"
    packages = _packages(c, raw, "packages") + _packages(c, raw, "modules")
    groups = _packages(c, raw, "groups")
    containers = _containers(c, raw, packages)
    custom = _customizations(c, raw)
    _cross_checks(c, custom)
    if c.problems:
        raise BlueprintError(source, c.problems)
    return Blueprint(name=name or "", description=c.text(raw, "description", "", "") or "",
                     version=version, distro=distro, packages=packages, groups=groups,
                     containers=containers, customizations=custom, source=source)


def load(path: Path) -> Blueprint:
    """Read and validate a blueprint file (TOML, or JSON for ``*.json``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BlueprintError(str(path), [Problem("<file>", "not UTF-8 text")]) from None
    return parse_text(text, str(path))
