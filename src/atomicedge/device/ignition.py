"""Ignition first boot on the device: apply a spec 3.x config exactly once (stdlib only).

Where the config comes from, first found wins: ``--config FILE``; the provisioning file that
``atomicedge device install --ignition`` put into the deployment (:data:`PROVISIONED`); QEMU's
``-fw_cfg name=opt/com.coreos/config,file=...`` (:data:`FW_CFG`). What it does, in Ignition's
order: groups and users (``useradd``/``usermod``, ssh keys into ``~/.ssh/authorized_keys``),
directories, files and links (owners by name or id, modes), then systemd units (written to
``/etc/systemd/system`` and enabled with the links ``systemctl enable`` makes from their
``[Install]`` section; when booted, ``systemctl daemon-reload`` and a start of the enabled
units). The marker :data:`MARKER` in ``/var`` (shared by all deployments) is written last, so
a crash part-way re-applies on the next boot and a finished run never repeats.
``atomicedge-ignition-firstboot.service`` runs ``python3 -m atomicedge.device.ignition``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from atomicedge import runner
from atomicedge.errors import AtomicEdgeError, ToolError, UsageError
from atomicedge.fsutil import atomic_write

MARKER = "var/lib/atomicedge/ignition.done"
PROVISIONED = "etc/atomicedge/ignition.ign"
FW_CFG = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw")
SUPPORTED = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")
MAX_CONFIG = 16 << 20
KNOWN_TOP = {"ignition", "passwd", "storage", "systemd"}


class IgnitionError(UsageError):
    """The config asks for something refused here (bad field, traversal, unknown user)."""


# -- reading -----------------------------------------------------------------------------------

def parse(raw: bytes, origin: str) -> dict[str, Any]:
    """JSON -> config dict; version and top-level sections checked."""
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IgnitionError(f"{origin}: not valid JSON: {exc}",
                            "make it with `atomicedge butane FCC.yaml`") from None
    if not isinstance(config, dict):
        raise IgnitionError(f"{origin}: the config must be a JSON object", "see the spec 3.x")
    version = config.get("ignition", {}).get("version") if isinstance(
        config.get("ignition"), dict) else None
    if version not in SUPPORTED:
        raise IgnitionError(f"{origin}: ignition.version {version!r} is not supported",
                            f"use one of {', '.join(SUPPORTED)}")
    extra = sorted(set(config) - KNOWN_TOP)
    for key in ("disks", "raid", "filesystems", "luks", "trees"):
        if config.get("storage", {}).get(key):
            extra.append(f"storage.{key}")
    if config.get("ignition", {}).get("config"):
        extra.append("ignition.config")
    if extra:
        raise IgnitionError(f"{origin}: unsupported section(s): {', '.join(extra)}",
                            "this device applies passwd, storage files/directories/links "
                            "and systemd units (docs/provisioning.md)")
    return config


def find_config(root: Path, explicit: Path | None = None,
                fw_cfg: Path = FW_CFG) -> tuple[bytes, str] | None:
    """The config bytes and where they came from, or None when the device has none."""
    candidates = [explicit] if explicit is not None else [root / PROVISIONED, fw_cfg]
    for path in candidates:
        if path is not None and path.is_file():
            with open(path, "rb") as f:
                data = f.read(MAX_CONFIG + 1)
            if len(data) > MAX_CONFIG:
                raise IgnitionError(f"{path}: config larger than {MAX_CONFIG} bytes",
                                    "keep large files out of the config")
            return data, str(path)
    if explicit is not None:
        raise IgnitionError(f"{explicit}: no such config file", "give an existing file")
    return None


def decode_source(res: dict[str, Any], where: str) -> bytes:
    """A ``contents``/``append`` resource: ``data:`` URLs only, gzip and hash checked."""
    source = res.get("source")
    if source is None:
        return b""
    if not isinstance(source, str) or not source.startswith("data:") or "," not in source:
        raise IgnitionError(f"{where}: source {str(source)[:40]!r} is not a data: URL",
                            "embed the contents (FCC `inline:` or `local:`); this device "
                            "fetches nothing over the network on first boot")
    head, _, payload = source[5:].partition(",")
    if head.endswith(";base64"):
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError:
            raise IgnitionError(f"{where}: bad base64 in data URL", "re-encode it") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    want = res.get("verification", {}).get("hash")
    if res.get("compression") == "gzip":
        if want:
            _check_hash(data, want, where)
            want = None
        data = gzip.decompress(data)
    elif res.get("compression"):
        raise IgnitionError(f"{where}: compression {res['compression']!r} unknown", "use gzip")
    if want:
        _check_hash(data, want, where)
    return data


def _check_hash(data: bytes, want: str, where: str) -> None:
    algo, _, value = want.partition("-")
    if algo not in ("sha256", "sha512"):
        raise IgnitionError(f"{where}: hash type {algo!r} unknown", "use sha256- or sha512-")
    if hashlib.new(algo, data).hexdigest() != value.lower():
        raise IgnitionError(f"{where}: contents do not match verification.hash",
                            "regenerate the hash or the contents")


# -- paths and owners --------------------------------------------------------------------------

def inside(root: Path, path: Any, where: str) -> Path:
    """``path`` (absolute, no ``..``) under ``root``; its parents must not leave ``root``."""
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/") \
            or "\0" in path:
        raise IgnitionError(f"{where}: path {path!r} must be absolute without '..'",
                            "write the full path on the device")
    target = root / path.lstrip("/")
    real_root = root.resolve()
    if not target.parent.resolve().is_relative_to(real_root) and str(real_root) != "/":
        raise IgnitionError(f"{where}: {path} leads outside the device tree through a symlink",
                            "configure the real path")
    return target


def _db(root: Path, name: str) -> list[list[str]]:
    try:
        text = (root / "etc" / name).read_text()
    except FileNotFoundError:
        return []
    return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]


def lookup_user(root: Path, name: str) -> tuple[int, int, str] | None:
    for f in _db(root, "passwd"):
        if len(f) >= 7 and f[0] == name:
            return int(f[2]), int(f[3]), f[5]
    return None


def _owner(root: Path, spec: dict[str, Any] | None, db: str, where: str) -> int:
    if not spec:
        return 0
    if "id" in spec:
        return int(spec["id"])
    for f in _db(root, db):
        if len(f) >= 3 and f[0] == spec.get("name"):
            return int(f[2])
    raise IgnitionError(f"{where}: {db} entry {spec.get('name')!r} does not exist",
                        "create it in passwd.users/groups or give an id")


def _chown(root: Path, path: Path, entry: dict[str, Any], where: str) -> None:
    os.lchown(path, _owner(root, entry.get("user"), "passwd", where),
              _owner(root, entry.get("group"), "group", where))


def _mkparents(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)


# -- users and groups --------------------------------------------------------------------------

def _prefix(root: Path) -> list[str]:
    return [] if str(root.resolve()) == "/" else ["--prefix", str(root)]


def apply_groups(root: Path, groups: list[dict[str, Any]]) -> None:
    for i, g in enumerate(groups):
        name = g.get("name")
        if not isinstance(name, str) or not name:
            raise IgnitionError(f"passwd.groups.{i}.name missing", "name every group")
        if any(f[0] == name for f in _db(root, "group")):
            continue
        argv = ["groupadd", *_prefix(root)]
        if g.get("gid") is not None:
            argv += ["--gid", str(g["gid"])]
        if g.get("passwordHash"):
            argv += ["--password", g["passwordHash"]]
        if g.get("system"):
            argv.append("--system")
        runner.run([*argv, name], what=f"groupadd {name}", timeout=60)


def apply_user(root: Path, u: dict[str, Any], where: str) -> None:
    name = u.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise IgnitionError(f"{where}.name {name!r} is not a user name", "name every user")
    exists = lookup_user(root, name) is not None
    argv = ["usermod" if exists else "useradd", *_prefix(root)]
    base = len(argv)
    opts = {"uid": "--uid", "gecos": "--comment", "homeDir": "--home", "shell": "--shell",
            "passwordHash": "--password", "primaryGroup": "--gid"}
    for key, flag in opts.items():
        if u.get(key) is not None:
            argv += [flag, str(u[key])]
    if u.get("groups"):
        argv += (["--append"] if exists else []) + ["--groups", ",".join(u["groups"])]
    if not exists:
        argv.append("--no-create-home" if u.get("noCreateHome") else "--create-home")
        argv += ["--no-user-group"] if u.get("noUserGroup") else []
        argv += ["--no-log-init"] if u.get("noLogInit") else []
        argv += ["--system"] if u.get("system") else []
    if not exists or len(argv) > base:  # an existing user may need nothing but keys
        runner.run([*argv, name], what=f"{argv[0]} {name}", timeout=60)
    keys = u.get("sshAuthorizedKeys") or []
    if keys:
        write_keys(root, name, keys)


def write_keys(root: Path, name: str, keys: list[str]) -> Path:
    """Add ``keys`` to the user's ``~/.ssh/authorized_keys`` (0700/0600, owned by the user)."""
    found = lookup_user(root, name)
    if found is None:
        raise IgnitionError(f"user {name} vanished before its keys were written", "retry")
    uid, gid, home = found
    ssh = inside(root, home.rstrip("/") + "/.ssh", f"home of {name}")
    if not ssh.parent.exists():  # noCreateHome: the keys still need a home
        ssh.parent.mkdir(parents=True, mode=0o700)
        os.lchown(ssh.parent, uid, gid)
    ssh.mkdir(exist_ok=True, mode=0o700)
    os.chmod(ssh, 0o700)
    os.lchown(ssh, uid, gid)
    path = ssh / "authorized_keys"
    old = path.read_text().splitlines() if path.is_file() and not path.is_symlink() else []
    lines = old + [k.strip() for k in keys if k.strip() and k.strip() not in old]
    atomic_write(path, "\n".join(lines) + "\n", mode=0o600,
                 before_rename=lambda fd: os.fchown(fd, uid, gid))
    return path


# -- storage -----------------------------------------------------------------------------------

def apply_directory(root: Path, d: dict[str, Any], where: str) -> None:
    path = inside(root, d.get("path"), where)
    if d.get("overwrite") and (path.is_symlink() or path.is_file()):
        path.unlink()
    _mkparents(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise IgnitionError(f"{where}: {d['path']} exists and is not a directory",
                            "set overwrite: true to replace it")
    path.mkdir(exist_ok=True)
    os.chmod(path, d.get("mode", 0o755))
    _chown(root, path, d, where)


def apply_file(root: Path, f: dict[str, Any], where: str) -> None:
    path = inside(root, f.get("path"), where)
    contents = f.get("contents")
    data = decode_source(contents, f"{where}.contents") if contents else None
    exists = path.exists() or path.is_symlink()
    if exists and (path.is_symlink() or path.is_dir()):
        raise IgnitionError(f"{where}: {f['path']} exists and is not a regular file",
                            "remove it from the image or configure another path")
    if exists and data is not None and not f.get("overwrite") and path.read_bytes() != data:
        raise IgnitionError(f"{where}: {f['path']} exists and overwrite is false",
                            "set overwrite: true to replace it")
    if data is None:
        data = path.read_bytes() if exists else b""
    for j, res in enumerate(f.get("append") or []):
        data += decode_source(res, f"{where}.append.{j}")
    mode = f.get("mode", path.stat().st_mode & 0o7777 if exists else 0o644)
    uid = _owner(root, f.get("user"), "passwd", where)
    gid = _owner(root, f.get("group"), "group", where)
    _mkparents(path)
    atomic_write(path, data, mode=mode, before_rename=lambda fd: os.fchown(fd, uid, gid))
    os.chmod(path, mode)  # after chown: setuid/setgid bits survive


def apply_link(root: Path, ln: dict[str, Any], where: str) -> None:
    path = inside(root, ln.get("path"), where)
    target = ln.get("target")
    if not isinstance(target, str) or not target:
        raise IgnitionError(f"{where}.target missing", "give the link's target")
    _mkparents(path)
    if path.is_symlink() and os.readlink(path) == target and not ln.get("hard"):
        return
    if path.exists() or path.is_symlink():
        if not ln.get("overwrite"):
            raise IgnitionError(f"{where}: {ln['path']} exists and overwrite is false",
                                "set overwrite: true to replace it")
        if path.is_dir() and not path.is_symlink():
            raise IgnitionError(f"{where}: {ln['path']} is a directory", "choose another path")
        path.unlink()
    if ln.get("hard"):
        os.link(inside(root, target, f"{where}.target"), path)
    else:
        os.symlink(target, path)
    _chown(root, path, ln, where)


# -- systemd units -----------------------------------------------------------------------------

UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


def _install_links(root: Path, name: str, text: str) -> list[tuple[Path, str]]:
    """The links ``systemctl enable`` makes in /etc from the unit's [Install] section."""
    etc = root / "etc/systemd/system"
    links: list[tuple[Path, str]] = []
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        if section != "[Install]" or "=" not in s:
            continue
        key, _, value = (p.strip() for p in s.partition("="))
        for other in value.split():
            if key == "Alias":
                links.append((etc / other, f"/etc/systemd/system/{name}"))
            elif key in ("WantedBy", "RequiredBy", "UpheldBy"):
                kind = {"WantedBy": "wants", "RequiredBy": "requires", "UpheldBy": "upholds"}
                links.append((etc / f"{other}.{kind[key]}" / name,
                               f"/etc/systemd/system/{name}"))
    return links


def apply_unit(root: Path, u: dict[str, Any], where: str) -> bool:
    """Write, mask, enable or disable one unit; True when it was enabled."""
    name = u.get("name")
    if not isinstance(name, str) or "/" in name or not name or name.startswith("."):
        raise IgnitionError(f"{where}.name {name!r} is not a unit name", "e.g. hello.service")
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    unit_path = etc / name
    if u.get("contents") is not None:
        if unit_path.is_symlink():
            unit_path.unlink()
        atomic_write(unit_path, u["contents"], mode=0o644)
    for j, drop in enumerate(u.get("dropins") or []):
        dname = drop.get("name")
        if not isinstance(dname, str) or "/" in dname or not dname.endswith(".conf"):
            raise IgnitionError(f"{where}.dropins.{j}.name {dname!r} is not a drop-in name",
                                "e.g. 10-override.conf")
        (etc / f"{name}.d").mkdir(exist_ok=True)
        atomic_write(etc / f"{name}.d" / dname, drop.get("contents") or "", mode=0o644)
    if u.get("mask"):
        if unit_path.exists() and not unit_path.is_symlink():
            unit_path.unlink()
        if not unit_path.is_symlink():
            os.symlink("/dev/null", unit_path)
        return False
    if u.get("enabled") is None:
        return False
    text = next(((root / d / name).read_text() for d in UNIT_DIRS
                 if (root / d / name).is_file()), None)
    if text is None:
        raise IgnitionError(f"{where}: unit {name} has no contents and is not installed",
                            "give its contents or install the package that ships it")
    for link, target in _install_links(root, name, text):
        if u["enabled"]:
            link.parent.mkdir(exist_ok=True)
            if not link.is_symlink():
                os.symlink(target, link)
        elif link.is_symlink():
            link.unlink()
    return bool(u["enabled"])


# -- the whole config --------------------------------------------------------------------------

def apply(root: Path, config: dict[str, Any], *, booted: bool = False) -> list[str]:
    """Apply ``config`` under ``root``; returns what was done, one line each."""
    done: list[str] = []
    passwd, storage = config.get("passwd") or {}, config.get("storage") or {}
    apply_groups(root, passwd.get("groups") or [])
    for i, u in enumerate(passwd.get("users") or []):
        apply_user(root, u, f"passwd.users.{i}")
        done.append(f"user {u['name']}")
    for kind, func in (("directories", apply_directory), ("files", apply_file),
                       ("links", apply_link)):
        for i, entry in enumerate(storage.get(kind) or []):
            func(root, entry, f"storage.{kind}.{i}")
            done.append(f"{kind[:-1] if kind != 'directories' else 'directory'} "
                        f"{entry['path']}")
    enabled: list[str] = []
    for i, unit in enumerate((config.get("systemd") or {}).get("units") or []):
        if apply_unit(root, unit, f"systemd.units.{i}"):
            enabled.append(unit["name"])
        done.append(f"unit {unit['name']}")
    if booted:
        systemctl("daemon-reload")
        for name in enabled:
            systemctl("start", "--no-block", name)
    return done


def systemctl(*args: str, attempts: int = 6) -> None:
    """``systemctl ARGS``, retried with a growing pause: on a loaded machine the manager can
    drop the calls that follow a daemon-reload ("Transport endpoint is not connected")."""
    for attempt in range(1, attempts + 1):
        try:
            runner.run(["systemctl", *args], what=f"systemctl {' '.join(args)}", timeout=120)
            return
        except ToolError:
            if attempt == attempts:
                raise
            time.sleep(2 * attempt)


def first_boot(root: Path, explicit: Path | None = None, *, booted: bool = False,
               fw_cfg: Path = FW_CFG) -> list[str] | None:
    """Apply the device's config unless the marker says it was; None when already done."""
    marker = root / MARKER
    if marker.exists():
        return None
    found = find_config(root, explicit, fw_cfg)
    done: list[str] = []
    source = "none"
    if found is not None:
        raw, source = found
        config = parse(raw, source)
        done = apply(root, config, booted=booted)
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"source": source, "sha256": hashlib.sha256(found[0]).hexdigest() if found else None,
              "applied": done}
    atomic_write(marker, json.dumps(record, indent=2) + "\n", mode=0o644)
    return done


def main(argv: list[str] | None = None) -> int:
    """``python3 -m atomicedge.device.ignition [--root DIR] [--config FILE]`` (the unit's)."""
    p = argparse.ArgumentParser(prog="atomicedge-ignition", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("/"))
    p.add_argument("--config", type=Path, help="default: provisioned file, then fw_cfg")
    args = p.parse_args(argv)
    booted = str(args.root.resolve()) == "/" and Path("/run/systemd/system").is_dir()
    try:
        done = first_boot(args.root, args.config, booted=booted)
    except AtomicEdgeError as exc:
        print(f"ignition: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if done is None:
        print("ignition: already applied on an earlier boot; nothing to do")
    else:
        for line in done:
            print(f"ignition: {line}")
        print(f"ignition: done ({len(done)} item(s)); marker {Path('/') / MARKER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
