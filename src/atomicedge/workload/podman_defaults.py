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
# embedded images (blueprint [[containers]]): osbuild's location, read-only on the device
IMAGE_STORE = "/usr/share/containers/storage"
# the drivers the device's podman uses (docs/workloads.md, measured in lab devices): root
# overlay; rootless users vfs (overlay would use the store's root-owned layers as they are, and
# the user's container root cannot write where real root owns the files). The embedded store
# holds each image for both (ostree stores the identical files once).
STORAGE_DRIVER = "overlay"
ROOTLESS_STORAGE_DRIVER = "vfs"
STORE_DRIVERS = tuple(dict.fromkeys((STORAGE_DRIVER, ROOTLESS_STORAGE_DRIVER)))
ROOTLESS_STORAGE_CONF = "containers/storage-rootless.conf"
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


def storage_conf(driver: str = STORAGE_DRIVER, stores: Sequence[str] = (IMAGE_STORE,),
                 rootless: bool = False) -> str:
    """``storage.conf`` with the embedded image store: /etc/containers/storage.conf (root:
    c/storage then wants runroot and graphroot spelled out, its defaults) and
    /etc/containers/storage-rootless.conf (each rootless user's
    ``~/.config/containers/storage.conf`` links there; no roots, so every user keeps
    ``~/.local/share/containers/storage``). c/storage passes ``additionalimagestores`` to the
    driver named here only, so the driver is explicit."""
    quoted = ", ".join(f'"{s}"' for s in stores)
    roots = "" if rootless else ('runroot = "/run/containers/storage"\n'
                                 'graphroot = "/var/lib/containers/storage"\n')
    return ("# atomicedge: images embedded at compose time (blueprint [[containers]]) are in a\n"
            "# read-only additional image store; podman runs them without a registry\n"
            f'[storage]\ndriver = "{driver}"\n{roots}\n[storage.options]\n'
            f"additionalimagestores = [{quoted}]\n")


def podman_files(users: Sequence[str], subuid: str = "", subgid: str = "",
                 image_store: bool = False) -> dict[str, str]:
    """Paths relative to ``/etc`` -> new contents (containers.conf, subuid, subgid, and
    storage.conf when the image embeds images)."""
    out = {"containers/containers.conf": CONTAINERS_CONF,
           "subuid": subid_text(subuid, users, "/etc/subuid"),
           "subgid": subid_text(subgid, users, "/etc/subgid")}
    if image_store:
        out["containers/storage.conf"] = storage_conf()
        out[ROOTLESS_STORAGE_CONF] = storage_conf(ROOTLESS_STORAGE_DRIVER, rootless=True)
    return out


def install_podman_defaults(tree: Path, users: Sequence[str], image_store: bool = False) -> None:
    """Write :func:`podman_files` into ``tree``'s /etc (``usr/etc`` once it exists)."""
    etc = tree / "usr" / "etc" if (tree / "usr" / "etc").is_dir() else tree / "etc"
    current = {name: (etc / name).read_text() if (etc / name).is_file() else ""
               for name in ("subuid", "subgid")}
    for rel, text in podman_files(users, current["subuid"], current["subgid"],
                                  image_store).items():
        path = etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, mode=0o644)
