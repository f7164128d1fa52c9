"""Turn an installed Debian tree into an OSTree-shaped tree, one documented step per function.

OSTree ships only /usr and /etc (as /usr/etc, merged three-way on every update) and treats
/var as per-device state. Every step below exists because a deployed commit would otherwise
break or lose data:

1. ``kernel``: /boot/vmlinuz-<kver> and initrd.img-<kver> move to /usr/lib/modules/<kver>/
   (``vmlinuz``, ``initramfs.img``) — where ``ostree admin deploy`` looks for them.
2. ``pkgdb``: /var/lib/dpkg moves to /usr/lib/sysimage/dpkg (the "sysimage" convention of
   rpm-ostree's /usr/lib/sysimage/rpm) so the package list travels inside the commit; a
   tmpfiles.d link makes /var/lib/dpkg point there on the device (read-only, for dpkg-query).
3. ``machine_id``: /etc/machine-id emptied so every device generates its own at first boot;
   ssh host keys deleted and regenerated at first boot by a drop-in (ssh-keygen -A).
4. ``var``: every directory and symlink under /var is recorded as a tmpfiles.d entry
   (/usr/lib/tmpfiles.d/atomicedge-var.conf) and /var is emptied; systemd-tmpfiles recreates
   them at boot. Files under /var (logs, apt lists) are dropped.
5. ``links``: /home, /root, /opt, /srv, /mnt, /usr/local become links into /var (var/home,
   var/roothome, ...), /media into /run; ``sysroot/`` and ``ostree -> sysroot/ostree`` added.
6. ``api_dirs``: /dev, /proc, /sys, /run, /tmp emptied (device nodes cannot be committed).
7. ``etc``: /etc moves to /usr/etc (last, after all customizations wrote to /etc).
8. ``pycache``: the packages' timestamp-checked ``.pyc`` files become unchecked-hash ones. A
   deployment's files all have mtime 0 (OSTree stores none) and /usr is read-only, so every
   timestamp check would fail on the device and python3 would compile each module it imports
   again, on every start (firewalld, the agent, the health checks: seconds each under TCG).
   Only caches that match their source (mtime and size, as python checks) are converted.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from pathlib import Path

from atomicedge.errors import UsageError

DPKG_DIR = "usr/lib/sysimage/dpkg"
VAR_TMPFILES = "usr/lib/tmpfiles.d/atomicedge-var.conf"
LINKS = {"home": "var/home", "root": "var/roothome", "opt": "var/opt", "srv": "var/srv",
         "mnt": "var/mnt", "media": "run/media"}
LINK_DIRS = {"var/home": "0755", "var/roothome": "0700", "var/opt": "0755", "var/srv": "0755",
             "var/mnt": "0755", "var/usrlocal": "0755", "var/usrlocal/bin": "0755",
             "var/usrlocal/sbin": "0755", "var/usrlocal/lib": "0755", "var/usrlocal/share": "0755"}
FACTORY = "usr/share/atomicedge/factory"
FACTORY_TMPFILES = "usr/lib/tmpfiles.d/atomicedge-factory.conf"
SSH_DROPIN = "etc/systemd/system/ssh.service.d/atomicedge-hostkeys.conf"


def _clear_dir(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    if not path.exists():
        path.mkdir(mode=0o755)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def kernel(tree: Path) -> str | None:
    """Step 1. Returns the kernel version, or None when the tree has no kernel."""
    boot = tree / "boot"
    kernels = sorted(boot.glob("vmlinuz-*")) if boot.is_dir() else []
    if not kernels:
        return None
    if len(kernels) > 1:
        raise UsageError(f"the image has {len(kernels)} kernels: "
                         + ", ".join(k.name for k in kernels), "install exactly one kernel")
    kver = kernels[0].name[len("vmlinuz-"):]
    dest = tree / "usr/lib/modules" / kver
    dest.mkdir(parents=True, exist_ok=True)
    shutil.move(kernels[0], dest / "vmlinuz")
    initrd = boot / f"initrd.img-{kver}"
    if not initrd.exists():
        raise UsageError(f"kernel {kver} has no initramfs in /boot",
                         "the edge profile installs dracut; check its output")
    shutil.move(initrd, dest / "initramfs.img")
    for name in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        (tree / name).unlink(missing_ok=True)
    _clear_dir(boot)
    return kver


def pkgdb(tree: Path) -> None:
    """Step 2."""
    src = tree / "var/lib/dpkg"
    if not src.is_dir():
        return
    dest = tree / DPKG_DIR
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dest)
    for name in ("lock", "lock-frontend", "triggers/Lock"):
        (dest / name).unlink(missing_ok=True)


def machine_id(tree: Path) -> None:
    """Step 3."""
    mid = tree / "etc/machine-id"
    mid.unlink(missing_ok=True)
    mid.touch(mode=0o444)  # empty, not absent: systemd then treats the boot as the first one
    (tree / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    keys = sorted((tree / "etc/ssh").glob("ssh_host_*")) if (tree / "etc/ssh").is_dir() else []
    for key in keys:
        key.unlink()
    if (tree / "usr/sbin/sshd").exists():
        drop = tree / SSH_DROPIN
        drop.parent.mkdir(parents=True, exist_ok=True)
        # host keys are per device, made at first start - before Debian's config test
        # (``sshd -t`` fails without them), so the list is reset and given in order
        drop.write_text("[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\n"
                        "ExecStartPre=/usr/sbin/sshd -t\n")


def _tmpfiles_entry(tree: Path, path: Path) -> str:
    st = path.lstat()
    rel = "/" + str(path.relative_to(tree))
    if stat.S_ISLNK(st.st_mode):
        return f"L {rel} - - - - {os.readlink(path)}"
    return f"d {rel} {stat.S_IMODE(st.st_mode):04o} {st.st_uid} {st.st_gid} -"


def var(tree: Path) -> int:
    """Step 4. Returns the number of files dropped from /var."""
    root = tree / "var"
    lines = ["# /var as shipped by the packages, recreated at boot (atomicedge compose)"]
    dropped = 0
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            base = Path(dirpath)
            for name in sorted(dirnames):
                lines.append(_tmpfiles_entry(tree, base / name))
            for name in sorted(filenames):
                if (base / name).is_symlink():
                    lines.append(_tmpfiles_entry(tree, base / name))
                else:
                    dropped += 1
            dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
    lines.append(f"L /var/lib/dpkg - - - - ../../{DPKG_DIR}")
    for rel, mode in LINK_DIRS.items():
        lines.append(f"d /{rel} {mode} 0 0 -")
    out = tree / VAR_TMPFILES
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    _clear_dir(root)
    return dropped


def _to_factory(tree: Path, path: Path, target: str) -> str:
    """Content a package put in /root (dotfiles) etc.: kept in /usr, copied to /var at boot."""
    dest = tree / FACTORY / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, dest)
    return f"C /{target} - - - - /{FACTORY}/{path.name}"


def links(tree: Path) -> None:
    """Step 5. Non-empty /root, /opt, ... move to /usr/share/atomicedge/factory (tmpfiles C)."""
    factory: list[str] = []
    for name, target in LINKS.items():
        path = tree / name
        if path.is_dir() and not path.is_symlink():
            if any(path.iterdir()):
                factory.append(_to_factory(tree, path, target))
            else:
                path.rmdir()
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    local = tree / "usr/local"
    if local.is_dir() and not local.is_symlink():
        shutil.rmtree(local)
    local.unlink(missing_ok=True)
    local.symlink_to("../var/usrlocal")
    (tree / "sysroot").mkdir(exist_ok=True)
    ostree = tree / "ostree"
    ostree.unlink(missing_ok=True)
    ostree.symlink_to("sysroot/ostree")
    if factory:
        out = tree / FACTORY_TMPFILES
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# package content of /root, /opt, ... copied into /var at boot\n"
                       + "\n".join(factory) + "\n")


def api_dirs(tree: Path) -> None:
    """Step 6."""
    for name in ("dev", "proc", "sys", "run", "tmp"):
        _clear_dir(tree / name)
    os.chmod(tree / "tmp", 0o1777)


def etc(tree: Path) -> None:
    """Step 7."""
    if (tree / "usr/etc").exists():
        raise UsageError("the image already has /usr/etc", "a package ships /usr/etc; remove it")
    shutil.move(tree / "etc", tree / "usr/etc")


PYC_TIMESTAMP = 0          # flags word of a pyc: 0 = timestamp-checked (PEP 552)
PYC_UNCHECKED_HASH = 1     # hash-based, source never checked


def _pycs(tree: Path) -> list[Path]:
    """Every regular ``__pycache__/*.pyc`` under /usr (symlinks never followed: an absolute
    link in the image would point into the build host)."""
    out = []
    for dirpath, _dirs, files in os.walk(tree / "usr"):
        if os.path.basename(dirpath) == "__pycache__":
            out += [Path(dirpath, f) for f in files if f.endswith(".pyc")]
    return sorted(out)


def _unchecked(data: bytes, source: bytes) -> bytes | None:
    """The unchecked-hash form of timestamp pyc ``data`` when it matches ``source``."""
    if len(data) < 16 or int.from_bytes(data[4:8], "little") != PYC_TIMESTAMP:
        return None
    if int.from_bytes(data[12:16], "little") != len(source) & 0xFFFFFFFF:
        return None
    # the hash is never checked in this mode; it is the real one when the image's python is
    # the builder's version (the same magic number), else the old mtime+size stand in for it
    digest = importlib.util.source_hash(source) if data[:4] == importlib.util.MAGIC_NUMBER \
        else data[8:16]
    return data[:4] + PYC_UNCHECKED_HASH.to_bytes(4, "little") + digest + data[16:]


def pycache(tree: Path) -> int:
    """Step 8. Returns the number of ``.pyc`` files converted (each written as a new file:
    the tree may share inodes with the package cache)."""
    converted = 0
    for pyc in _pycs(tree):
        src = pyc.parent.parent / (pyc.name.split(".", 1)[0] + ".py")
        try:
            st, pst = src.lstat(), pyc.lstat()
            if not (stat.S_ISREG(st.st_mode) and stat.S_ISREG(pst.st_mode)):
                continue
            data = pyc.read_bytes()
        except OSError:
            continue
        if len(data) < 16 or int.from_bytes(data[8:12], "little") != \
                int(st.st_mtime) & 0xFFFFFFFF:
            continue       # stale already (or hash-based): python decides as before
        new = _unchecked(data, src.read_bytes())
        if new is None:
            continue
        tmp = pyc.with_name(pyc.name + ".tmp")
        tmp.write_bytes(new)
        os.chmod(tmp, stat.S_IMODE(pst.st_mode))
        os.replace(tmp, pyc)
        converted += 1
    return converted


def prepare(tree: Path) -> dict[str, object]:
    """Run all steps in order; return facts for the commit metadata and the progress log."""
    kver = kernel(tree)
    pkgdb(tree)
    machine_id(tree)
    dropped = var(tree)
    links(tree)
    api_dirs(tree)
    etc(tree)
    pycs = pycache(tree)
    return {"kernel": kver, "var_files_dropped": dropped, "pyc_unchecked": pycs}
