"""Working podman defaults for an edge image that includes podman (machine-notes 6b).

Inside a systemd-nspawn device podman needs four settings: crun (runc cannot run with the
read-only v1 controllers nspawn mounts), ``keyring = false`` (nspawn's seccomp filter blocks
keyctl), cgroups disabled, and explicit ulimits (the hard limits cannot be raised without
CAP_SYS_RESOURCE). Rootless users need ``/etc/subuid`` and ``/etc/subgid`` ranges for images
with more than one uid.

:func:`podman_files` is pure (existing file contents in, new contents out);
:func:`install_podman_defaults` applies it to a tree (``etc/`` before ostree preparation,
``usr/etc/`` after).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from atomicedge.errors import UsageError
from atomicedge.fsutil import atomic_write

CONTAINERS_CONF = """\
# atomicedge edge base: podman settings that work on the devices (docs/workloads.md)
[containers]
# nspawn's seccomp filter blocks keyctl: no session keyring per container
keyring = false
# the v1 controllers are read-only in the device: containers stay in their unit's cgroup
cgroups = "disabled"
# at or under the hard limits (no CAP_SYS_RESOURCE to raise them)
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "crun"
cgroup_manager = "cgroupfs"
"""
SUBID_START = 100000
SUBID_COUNT = 65536
PACKAGES = ("podman", "crun", "uidmap", "slirp4netns", "dbus-user-session", "libpam-systemd")


def wants_podman(package_names: Sequence[str]) -> bool:
    """True when a blueprint's ``[[packages]]`` include podman."""
    return "podman" in package_names


def _subid_entries(text: str, path: str) -> tuple[set[str], int]:
    """Names already present and the first id after every existing range."""
    names, end = set(), SUBID_START
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            raise UsageError(f"{path}:{n}: not a name:start:count line: {line!r}",
                             "fix or remove the line in the image's subordinate id file")
        names.add(fields[0])
        end = max(end, int(fields[1]) + int(fields[2]))
    return names, end


def subid_text(existing: str, users: Sequence[str], path: str = "/etc/subuid") -> str:
    """``existing`` plus a ``name:start:65536`` range for each user that has none."""
    names, start = _subid_entries(existing, path)
    out = existing if not existing or existing.endswith("\n") else existing + "\n"
    for user in users:
        if user in names or user == "root":
            continue
        out += f"{user}:{start}:{SUBID_COUNT}\n"
        names.add(user)
        start += SUBID_COUNT
    return out


def podman_files(users: Sequence[str], subuid: str = "", subgid: str = "") -> dict[str, str]:
    """Paths relative to ``/etc`` -> new contents (containers.conf, subuid, subgid)."""
    return {"containers/containers.conf": CONTAINERS_CONF,
            "subuid": subid_text(subuid, users, "/etc/subuid"),
            "subgid": subid_text(subgid, users, "/etc/subgid")}


def install_podman_defaults(tree: Path, users: Sequence[str]) -> None:
    """Write :func:`podman_files` into ``tree``'s /etc (``usr/etc`` once it exists)."""
    etc = tree / "usr" / "etc" if (tree / "usr" / "etc").is_dir() else tree / "etc"
    current = {name: (etc / name).read_text() if (etc / name).is_file() else ""
               for name in ("subuid", "subgid")}
    for rel, text in podman_files(users, current["subuid"], current["subgid"]).items():
        path = etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, mode=0o644)
