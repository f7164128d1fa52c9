"""Small bootable Debian trees for device tests, the demo and the benchmark.

Until the image builder (``atomicedge.compose``) lands, tests need an OS tree that really boots
under systemd-nspawn: mmdebstrap (systemd, dbus, python3), then "ostree-ified" the way the
image builder will do it (``etc`` -> ``usr/etc``, a kernel under ``usr/lib/modules/<kver>/``,
empty ``var``, ``home``/``root``... as symlinks into ``var``).  The mmdebstrap result is cached
under ``$ATOMICEDGE_CACHE`` keyed by its inputs and renamed into place only when complete, so
an interrupted build never leaves a half tree behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from atomicedge.errors import ToolError
from atomicedge.ostree.repo import Repo

# systemd to boot; python3 and the Debian modules the device closure imports (compose/closure.py)
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "libpam-systemd",
                 "python3-rich", "python3-urllib3", "python3-nacl")
TREE_FORMAT = "2"  # bump when the preparation below changes
KVER = "6.1.0-atomicedge"


def cache_root() -> Path:
    return Path(os.environ.get("ATOMICEDGE_CACHE", "/var/tmp/atomicedge-cache"))


def _mirror_args() -> list[str]:
    src = Path("/etc/apt/sources.list.d/debian.sources")
    return [str(src)] if src.exists() else []


def base_tree(packages: tuple[str, ...] = BASE_PACKAGES) -> Path:
    """The cached raw mmdebstrap tree (built once per package set)."""
    key = hashlib.sha256(("\n".join(packages) + TREE_FORMAT).encode()).hexdigest()[:16]
    final = cache_root() / "device-base" / key
    if (final / "usr" / "lib" / "systemd" / "systemd").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages),
           "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
           "--dpkgopt=path-exclude=/usr/share/locale/*",
           "bookworm", str(tmp), *_mirror_args()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ToolError(f"mmdebstrap failed (exit {proc.returncode})",
                        "check the Debian mirror in /etc/apt/sources.list.d/debian.sources",
                        stderr=proc.stderr[-4000:])
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent build won the race
    return final


def ostreeify(src: Path, dest: Path, *, version: str, kernel: bytes = b"dummy kernel\n",
              initramfs: bytes = b"dummy initramfs\n") -> Path:
    """Copy ``src`` to ``dest`` laid out as an ostree commit wants it (see module doc)."""
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True)
    for d in ("dev", "proc", "sys", "run", "tmp", "boot", "var"):
        shutil.rmtree(dest / d, ignore_errors=True)
        (dest / d).mkdir(mode=0o755)
    os.chmod(dest / "tmp", 0o1777)
    for f in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        (dest / f).unlink(missing_ok=True)
    (dest / "etc" / "machine-id").write_text("")
    os.rename(dest / "etc", dest / "usr" / "etc")
    for name, target in (("home", "var/home"), ("root", "var/roothome"), ("opt", "var/opt"),
                         ("srv", "var/srv"), ("mnt", "var/mnt"), ("media", "run/media")):
        p = dest / name
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.exists():
            shutil.rmtree(p)
        os.symlink(target, p)
    (dest / "sysroot").mkdir(exist_ok=True)
    if not (dest / "ostree").is_symlink():
        os.symlink("sysroot/ostree", dest / "ostree")
    mod = dest / "usr" / "lib" / "modules" / KVER
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "vmlinuz").write_bytes(kernel)
    (mod / "initramfs.img").write_bytes(initramfs)
    tmpf = dest / "usr" / "lib" / "tmpfiles.d" / "atomicedge-var.conf"
    tmpf.write_text("d /var/home 0755 - - -\nd /var/roothome 0700 - - -\nd /var/opt 0755 - - -\n"
                    "d /var/srv 0755 - - -\nd /var/mnt 0755 - - -\n")
    (dest / "usr" / "lib" / "atomicedge-version").write_text(version + "\n")
    osr = dest / "usr" / "lib" / "os-release"
    if osr.exists():
        text = osr.read_text()
        lines = [ln for ln in text.splitlines() if not ln.startswith("VERSION_ID=")]
        lines.append(f"IMAGE_VERSION={version}")
        osr.unlink()  # may be a hardlink into the cache: never write through it
        osr.write_text("\n".join(lines) + "\n")
    return dest


# -- the lab: commits for tests, the demo and the benchmark -----------------------------------

CHECK_UPGRADE = """#!/bin/bash
# the seed demo's check: fail when the booted commit differs from the one recorded at the
# first boot (/etc/greenboot/orig.txt); delete orig.txt to allow an upgrade.
booted=$(/usr/bin/atomicedge device status --json | python3 -c '
import json, sys
deps = json.load(sys.stdin)["deployments"]
print([d["checksum"] for d in deps if d["booted"]][0])')
[ -e /etc/greenboot/orig.txt ] || echo "$booted" > /etc/greenboot/orig.txt
echo "$booted" > /etc/greenboot/current.txt
if ! cmp -s /etc/greenboot/orig.txt /etc/greenboot/current.txt; then
  echo "orig.txt ($(cat /etc/greenboot/orig.txt)) != current.txt ($booted)"
  exit 1
fi
"""

DRIVER = """#!/bin/sh
# test/demo operator: after the health check, run /var/lib/atomicedge-lab/next.sh once (if
# any), otherwise power off - unless the health check already asked for a reboot.
if systemctl list-jobs --no-legend | grep -Eq 'reboot.target|poweroff.target'; then exit 0; fi
if [ -e /var/lib/atomicedge-lab/next.sh ]; then
  mv /var/lib/atomicedge-lab/next.sh /run/next.sh
  exec /bin/sh -x /run/next.sh
fi
systemctl poweroff --no-block
"""

DRIVER_UNIT = """[Unit]
Description=atomicedge lab driver (tests and demo)
After=atomicedge-healthcheck.service multi-user.target
ConditionPathExists=/run/ostree-booted

[Service]
Type=oneshot
ExecStart=/usr/libexec/atomicedge-lab/driver.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


def lab_tree(workdir: Path, version: str, *, agent_toml: str | None = None,
             files: dict[str, tuple[str, int]] | None = None) -> Path:
    """An ostree-ready tree with the device agent, the seed's health check and the driver."""
    from atomicedge.compose import closure
    from atomicedge.device.image import install_device_files
    from atomicedge.workload.install import install_workload_files
    tree = ostreeify(base_tree(), workdir / f"tree-{version}", version=version)
    install_device_files(tree, agent_toml)
    install_workload_files(tree)
    closure.install(tree)
    extra = {
        "usr/etc/greenboot/check/required.d/01_check_upgrade.sh": (CHECK_UPGRADE, 0o755),
        "usr/libexec/atomicedge-lab/driver.sh": (DRIVER, 0o755),
        "usr/lib/systemd/system/atomicedge-lab-driver.service": (DRIVER_UNIT, 0o644),
        "usr/etc/atomicedge-release": (f"{version}\n", 0o644),
        **(files or {}),
    }
    for rel, (text, mode) in extra.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, mode)
    wants = tree / "usr/lib/systemd/system/multi-user.target.wants"
    os.symlink("../atomicedge-lab-driver.service", wants / "atomicedge-lab-driver.service")
    # noisy or failing in a container without devices
    for unit in ("systemd-networkd-wait-online.service", "getty@.service"):
        (tree / "usr/etc/systemd/system").mkdir(parents=True, exist_ok=True)
        link = tree / "usr/etc/systemd/system" / unit
        if not link.is_symlink():
            os.symlink("/dev/null", link)
    return tree


def lab_commit(repo: Repo, workdir: Path, version: str, ref: str, **kw: object) -> str:
    """Build :func:`lab_tree` and commit it on ``ref`` with ``version`` metadata."""
    from atomicedge.ostree.commit import commit_directory
    from atomicedge.ostree.gvariant import Variant
    tree = lab_tree(workdir, version, **kw)  # type: ignore[arg-type]
    try:
        return commit_directory(repo, tree, branch=ref, subject=f"atomicedge {version}",
                                metadata={"version": Variant("s", version)})
    finally:
        shutil.rmtree(tree, ignore_errors=True)
