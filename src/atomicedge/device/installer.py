"""The edge installer's device half: what runs inside the installer ISO's environment.

The ISO (``compose/installer.py``) boots the composed commit itself - its kernel, its
initramfs, its root file system read-only from the ISO under a tmpfs overlay - into
``atomicedge-installer.target``, whose one service runs ``python3 -m atomicedge.device.installer``
with the image's own python3 and this shipped closure. It reads the plan the host checked the
kickstart into (``/atomicedge/install.json``, beside ``/ks.cfg``; a ks.cfg that no longer
matches the plan's digest is refused), then, as anaconda does for ``ostreesetup``:

1. picks the target disk (the first whole disk that is not the installer medium) and refuses
   one that holds data unless the kickstart says ``clearpart --all`` or ``zerombr``;
2. lays it out like ``compose build --type qcow2`` (:data:`ESP_START`..: MBR, p1 the ESP with
   GRUB's EFI image, p2 ext4 ``root``, GRUB's boot.img and core.img before p1 - the pieces come
   prebuilt from the ISO, the partition table is written here) and makes the root file system;
3. :func:`install_sysroot` - the same function the disk builder uses: init-fs, os-init
   ``--osname``, pull of the embedded commit from the ISO's repository (``/ostree/repo``, the
   verified pull, every object re-hashed), deploy with the kernel arguments, and the remote
   ``--remote`` pointing at ``--url`` for updates;
4. the kickstart's groups, users (``useradd --prefix``), ``rootpw`` and ``sshkey`` lines in
   the new deployment (the stateroot's ``/var`` bound under it, so homes land there), then
   each ``%post`` in a chroot of the installed system (``/proc``, ``/sys``, ``/dev``, ``/run``,
   ``/var`` and ``/sysroot`` mounted as anaconda does);
5. syncs, unmounts and powers off (or ``reboot``/``halt`` as the kickstart says).

Progress goes to the console, prefixed ``atomicedge-installer:``; the last line is
``INSTALL OK`` or ``INSTALL FAILED`` (a failed install leaves the machine on, with its error).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge import runner
from atomicedge.device import deploy as dp
from atomicedge.device import fetch, grubcfg, ignition
from atomicedge.device import sysroot as sr
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.origin import Origin
from atomicedge.errors import AtomicEdgeError
from atomicedge.remote import config as remotes

# -- the disk layout (compose/disk.py builds the same one from files) -----------------------
SECTOR = 512
ESP_START = 2048                         # 1 MiB: MBR + core.img in the gap before it
ESP_SECTORS = 64 * 1024 * 1024 // SECTOR
ROOT_START = ESP_START + ESP_SECTORS
ROOT_LABEL = "root"
# A boot that dies before userspace must end in a reboot, or GRUB's counter never sees the next
# try (nobody is at an edge device's console): dracut reboots instead of its emergency shell
# (rd.emergency needs rd.shell=0), the kernel 10 s after a panic (Debian's default: never).
BASE_KARGS = ("root=LABEL=root", "rw", "console=ttyS0,115200", "rd.shell=0",
              "rd.emergency=reboot", "panic=10")

# -- what the ISO carries (paths relative to the medium's root) ------------------------------
PLAN = "atomicedge/install.json"
ISO_META = "atomicedge/iso.json"
KICKSTART = "ks.cfg"
REPO = "ostree/repo"
TARGET_GRUB = "atomicedge/target"        # boot.img (440 bytes), core.img, esp.img
GRUB_MODULES_DIR = "boot/grub/i386-pc"
PLAN_FORMAT = 1
FINISH = ("poweroff", "reboot", "halt")
TARGET = Path("/run/install/target")
SKIP_DISKS = re.compile(r"^(loop|ram|sr|zram|dm-|md|fd|nbd)")
BLKRRPART = 0x125F
POST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}


class InstallError(AtomicEdgeError):
    """The install cannot go on (bad plan, no target disk, a %post --erroronfail failed)."""


def say(msg: str) -> None:
    print(f"atomicedge-installer: {msg}", flush=True)


# -- the plan ------------------------------------------------------------------------------------

@dataclass
class Post:
    line: int
    body: str
    interpreter: str = "/bin/sh"
    erroronfail: bool = False
    log: str | None = None


@dataclass
class Plan:
    """A kickstart as checked on the host (compose/kickstart.py + compose/installer.py)."""

    kickstart_sha256: str
    ref: str
    commit: str
    osname: str
    remote: str
    url: str
    gpg: bool
    kargs: list[str] = field(default_factory=list)       # the blueprint's, after BASE_KARGS
    erase: bool = False                                   # clearpart --all / zerombr given
    groups: list[dict[str, Any]] = field(default_factory=list)  # {name[, gid]}, if missing
    users: list[dict[str, Any]] = field(default_factory=list)   # ignition.apply_user dicts
    rootpw: str | None = None                             # crypt hash ("!..." = locked)
    sshkeys: list[tuple[str, str]] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    finish: str = "poweroff"

    def to_json(self) -> str:
        d = dict(self.__dict__, format=PLAN_FORMAT, posts=[p.__dict__ for p in self.posts],
                 sshkeys=[list(k) for k in self.sshkeys])
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            d = json.loads(text)
            if d.pop("format", None) != PLAN_FORMAT:
                raise ValueError(f"plan format is not {PLAN_FORMAT}")
            d["posts"] = [Post(**p) for p in d.get("posts", [])]
            d["sshkeys"] = [(str(u), str(k)) for u, k in d.get("sshkeys", [])]
            plan = cls(**d)
        except (ValueError, TypeError, KeyError) as exc:
            raise InstallError(f"{PLAN} is not a valid install plan: {exc}",
                               "rebuild the ISO or re-embed the kickstart with "
                               "atomicedge mkksiso") from None
        if plan.finish not in FINISH or not re.fullmatch(r"[0-9a-f]{64}", plan.commit):
            raise InstallError(f"{PLAN}: bad finish {plan.finish!r} or commit {plan.commit!r}")
        return plan


def load_plan(medium: Path) -> Plan:
    """The plan, refused when ``ks.cfg`` is not the kickstart it was made from."""
    try:
        plan = Plan.from_json((medium / PLAN).read_text())
        ks = (medium / KICKSTART).read_bytes()
    except FileNotFoundError as exc:
        raise InstallError(f"the installer medium has no {exc.filename}",
                           "build it with: atomicedge compose build --type edge-installer") \
            from None
    if hashlib.sha256(ks).hexdigest() != plan.kickstart_sha256:
        raise InstallError(f"/{KICKSTART} differs from the kickstart checked into /{PLAN}",
                           "embed kickstarts with: atomicedge mkksiso KS ISO OUT")
    return plan


# -- the target disk -------------------------------------------------------------------------

def mbr(boot_code: bytes, disk_sectors: int, signature: int) -> bytes:
    """Sector 0: GRUB's boot code, p1 ESP (type ef), p2 root (83, bootable) to the end."""
    if disk_sectors <= ROOT_START + 2048:
        raise InstallError(f"the target disk ({disk_sectors * SECTOR >> 20} MiB) is too small",
                           "use a disk of at least 2 GiB")

    def entry(boot: int, ptype: int, start: int, count: int) -> bytes:
        # CHS fields say "use LBA" (as sfdisk writes for disks beyond CHS)
        return struct.pack("<B3sB3sII", boot, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff",
                           start, count)
    root_count = min(disk_sectors - ROOT_START, 0xFFFFFFFF)
    table = (entry(0, 0xEF, ESP_START, ESP_SECTORS) + entry(0x80, 0x83, ROOT_START, root_count)
             + bytes(32))
    return (boot_code[:440].ljust(440, b"\0") + struct.pack("<IH", signature, 0) + table
            + b"\x55\xaa")


def partition_path(disk: Path, n: int) -> Path:
    sep = "p" if disk.name[-1].isdigit() else ""
    return disk.with_name(f"{disk.name}{sep}{n}")


def candidate_disks(sys_block: Path = Path("/sys/block")) -> list[Path]:
    """Whole, writable, non-empty disks (no CD-ROM, loop, RAM or device-mapper device)."""
    out = []
    for d in sorted(sys_block.iterdir()) if sys_block.is_dir() else []:
        try:
            size = int((d / "size").read_text())
            ro = (d / "ro").read_text().strip() == "1"
        except (OSError, ValueError):
            continue
        if not SKIP_DISKS.match(d.name) and size > 0 and not ro:
            out.append(Path("/dev") / d.name)
    return out


def medium_disks(label: str) -> set[str]:
    """Disk names holding the installer medium (a USB stick written from the ISO)."""
    link = Path("/dev/disk/by-label") / label
    if not link.exists():
        return set()
    name = link.resolve().name
    parent = Path("/sys/class/block") / name / ".."
    whole = parent.resolve().name if (Path("/sys/class/block") / name / "partition").exists() \
        else name
    return {name, whole}


def find_target(label: str, explicit: str | None, timeout: float = 120.0) -> Path:
    """The install target: ``explicit``, else the first candidate disk (waits for udev)."""
    deadline = time.monotonic() + timeout
    while True:
        if explicit:
            if Path(explicit).exists():
                return Path(explicit)
        else:
            skip = medium_disks(label)
            disks = [d for d in candidate_disks() if d.name not in skip]
            if disks:
                return disks[0]
        if time.monotonic() > deadline:
            raise InstallError(f"no target disk found ({explicit or 'no whole disk'})",
                               "attach a disk (QEMU: -drive file=disk.qcow2,if=virtio)")
        time.sleep(1)


def holds_data(disk: Path) -> bool:
    """A partition table or file system signature in the first MiB or the last (GPT backup)."""
    with open(disk, "rb") as f:
        head = f.read(1 << 20)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - (1 << 20)))
        tail = f.read(1 << 20)
    return any(head) or any(tail)


def write_layout(disk: Path, medium: Path) -> None:
    """Partition table, GRUB boot code and the ESP onto ``disk``; then the kernel re-reads it."""
    pieces = medium / TARGET_GRUB
    core = (pieces / "core.img").read_bytes()
    if len(core) > (ESP_START - 1) * SECTOR:
        raise InstallError("GRUB core.img does not fit before the first partition")
    if (pieces / "esp.img").stat().st_size != ESP_SECTORS * SECTOR:
        raise InstallError(f"{pieces / 'esp.img'} is not {ESP_SECTORS * SECTOR} bytes")
    with open(disk, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        sector0 = mbr((pieces / "boot.img").read_bytes(), size // SECTOR,   # size checked
                      int.from_bytes(os.urandom(4), "little"))
        f.seek(size - (1 << 20))                        # no stale GPT backup header
        f.write(bytes(1 << 20))
        f.seek(0)
        f.write(sector0)
        f.write(core)
        f.write(bytes(ESP_START * SECTOR - f.tell()))
        with open(pieces / "esp.img", "rb") as esp:     # FAT ignores its free clusters:
            while chunk := esp.read(1 << 20):           # zero MiBs are skipped, not written
                if chunk.count(0) == len(chunk):
                    f.seek(len(chunk), os.SEEK_CUR)
                else:
                    f.write(chunk)
        f.write(bytes(1 << 20))                         # no old signature where p2 starts
        f.flush()
        os.fsync(f.fileno())
        fcntl.ioctl(f.fileno(), BLKRRPART)
    part = partition_path(disk, 2)
    deadline = time.monotonic() + 60
    while not part.exists():
        if time.monotonic() > deadline:
            raise InstallError(f"{part} did not appear after the partition table was written")
        time.sleep(0.2)


# -- the OSTree part, shared with compose/disk.py --------------------------------------------

def install_sysroot(root: Path, source_url: str, ref: str, commit: str, osname: str,
                    remote: str, kargs: list[str], update_url: str,
                    gpg_verify: bool = False) -> Path:
    """ostreesetup: the commit from ``source_url`` deployed into the sysroot at ``root``, the
    GRUB menu link and grubenv in its /boot, remote ``remote`` -> ``update_url`` afterwards.
    Returns the deployment directory."""
    sysroot = sr.init_fs(root)
    sr.os_init(sysroot, osname)
    remotes.add(sysroot.repo, remote, source_url, gpg_verify=False)
    csum = fetch.pull(sysroot.repo, remote, ref, commit=commit)
    grubcfg.install_link(sysroot.boot)
    GrubEnv(sysroot.grubenv_path).write({})
    d = dp.deploy(sysroot, osname, csum, Origin.new(f"{remote}:{ref}"), kargs)
    remotes.delete(sysroot.repo, remote)
    remotes.add(sysroot.repo, remote, update_url, gpg_verify=gpg_verify)
    return sysroot.deployment_dir(d)


def install_grub_modules(root: Path, modules: Path) -> None:
    dest = root / "boot" / "grub" / "i386-pc"
    dest.mkdir(parents=True, exist_ok=True)
    for p in modules.iterdir():
        if p.suffix in (".mod", ".lst"):
            shutil.copyfile(p, dest / p.name)


# -- the kickstart's accounts and scripts ----------------------------------------------------

@contextmanager
def mounted(points: list[tuple[list[str], Path]]) -> Iterator[None]:
    """Mount each (mount arguments, mount point) in order; unmount in reverse, always."""
    done: list[Path] = []
    try:
        for args, point in points:
            point.mkdir(parents=True, exist_ok=True)
            runner.run(["mount", *args, str(point)], what=f"mount {point}", timeout=60)
            done.append(point)
        yield
    finally:
        for point in reversed(done):
            res = runner.run(["umount", "-R", str(point)], what=f"umount {point}", check=False,
                             timeout=300)
            if res.returncode != 0:
                runner.run(["umount", "-R", "-l", str(point)], what=f"umount -l {point}",
                           check=False, timeout=60)


def chroot_mounts(target: Path, deployment: Path, stateroot_var: Path) -> list[tuple[
        list[str], Path]]:
    return [(["--bind", str(stateroot_var)], deployment / "var"),
            (["-t", "proc", "proc"], deployment / "proc"),
            (["--rbind", "/sys"], deployment / "sys"),
            (["--rbind", "/dev"], deployment / "dev"),
            (["-t", "tmpfs", "tmpfs"], deployment / "run"),
            (["--bind", str(target)], deployment / "sysroot")]


def make_parent(deployment: Path, path: str, where: str) -> Path:
    """``path`` in the deployment with its parent made: through the links into /var
    (``/home`` -> ``var/home``, ``/root`` -> ``var/roothome``), whose targets a fresh
    stateroot does not have yet (tmpfiles makes them at boot)."""
    target = ignition.inside(deployment, path, where)
    target.parent.resolve().mkdir(parents=True, exist_ok=True)
    return target


def apply_accounts(deployment: Path, plan: Plan) -> None:
    """Groups, users, root's password and ssh keys, with the deployment's own shadow files."""
    ignition.apply_groups(deployment, plan.groups)      # those the image does not have
    for u in plan.users:
        where = f"user {u['name']}"
        if ignition.lookup_user(deployment, u["name"]) is None:
            u = {"homeDir": f"/home/{u['name']}", **u}
            make_parent(deployment, u["homeDir"], where)
            say(f"creating {where}")
        else:
            say(f"updating {where} (the image has it)")
        ignition.apply_user(deployment, u, where)
    if plan.rootpw is not None:
        ignition.apply_user(deployment, {"name": "root", "passwordHash": plan.rootpw}, "rootpw")
    for user, key in plan.sshkeys:
        ignition.write_keys(deployment, user, [key])
        say(f"ssh key for {user} added")
    if any(g["name"] == "wheel" for g in plan.groups):  # the seeds' admin group: sudo as RHEL
        drop = deployment / "etc" / "sudoers.d" / "atomicedge-wheel"
        drop.parent.mkdir(parents=True, exist_ok=True)
        drop.write_text("%wheel ALL=(ALL:ALL) ALL\n")
        os.chmod(drop, 0o440)


def run_posts(deployment: Path, posts: list[Post]) -> None:
    """Each ``%post`` in a chroot of the installed system; its output to the console and
    ``--log``. A failing script stops the install only with ``--erroronfail``."""
    for i, post in enumerate(posts):
        script = deployment / "tmp" / f"ks-script-{i}"
        script.write_text(post.body)
        os.chmod(script, 0o700)
        say(f"%post (kickstart line {post.line}) with {post.interpreter}")
        try:
            res = runner.run(["chroot", str(deployment), post.interpreter, f"/tmp/{script.name}"],
                             what=f"%post of line {post.line}", check=False, env=POST_ENV,
                             timeout=3600)
        finally:
            script.unlink(missing_ok=True)
        output = (res.stdout or "") + (res.stderr or "")
        for line in output.splitlines():
            print(f"  {line}", flush=True)
        if post.log:
            log = make_parent(deployment, post.log, f"%post --log of line {post.line}")
            with open(log, "a") as f:
                f.write(output)
        if res.returncode != 0:
            if post.erroronfail:
                raise InstallError(f"%post of kickstart line {post.line} failed "
                                   f"(exit {res.returncode}) and says --erroronfail")
            say(f"%post of line {post.line} exited {res.returncode} (going on: no "
                "--erroronfail)")


# -- the whole install -----------------------------------------------------------------------

def install(medium: Path, label: str, target_dev: str | None = None) -> tuple[Plan, Path]:
    plan = load_plan(medium)
    say(f"kickstart checked: ostreesetup --osname={plan.osname} --remote={plan.remote} "
        f"--url={plan.url} --ref={plan.ref}; installing the embedded commit {plan.commit}")
    disk = find_target(label, target_dev)
    if holds_data(disk) and not plan.erase:
        raise InstallError(f"the target disk {disk} is not empty and the kickstart does not "
                           "erase it", "add 'zerombr' and 'clearpart --all --initlabel'")
    start = time.monotonic()
    say(f"target disk {disk}: writing the partition table, GRUB and the ESP")
    write_layout(disk, medium)
    root_dev = partition_path(disk, 2)
    runner.run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, str(root_dev)], what="mkfs.ext4",
               timeout=1800)
    with mounted([([str(root_dev)], TARGET)]):
        say("pulling the commit from the ISO's repository and deploying it")
        deployment = install_sysroot(
            TARGET, f"file://{(medium / REPO).resolve()}", plan.ref, plan.commit, plan.osname,
            plan.remote, [*BASE_KARGS, *plan.kargs], plan.url, plan.gpg)
        install_grub_modules(TARGET, medium / GRUB_MODULES_DIR)
        say(f"deployed {deployment.name} ({time.monotonic() - start:.0f} s)")
        var = TARGET / "ostree" / "deploy" / plan.osname / "var"
        with mounted(chroot_mounts(TARGET, deployment, var)):
            apply_accounts(deployment, plan)
            run_posts(deployment, plan.posts)
        os.sync()
    return plan, disk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m atomicedge.device.installer")
    ap.add_argument("--medium", type=Path, default=Path("/"), help="the ISO's root")
    ap.add_argument("--target", help="install onto this disk (default: the first one)")
    ap.add_argument("--no-finish", action="store_true", help="do not power off at the end")
    args = ap.parse_args(argv)
    start = time.monotonic()
    try:
        meta = json.loads((args.medium / ISO_META).read_text())
        plan, disk = install(args.medium, str(meta.get("label", "")), args.target)
    except (AtomicEdgeError, OSError, ValueError) as exc:
        say(f"INSTALL FAILED: {exc}")
        return 1
    except Exception as exc:   # a bug: its traceback to the journal, the verdict to the console
        traceback.print_exc()
        say(f"INSTALL FAILED: {exc.__class__.__name__}: {exc}")
        return 1
    say(f"INSTALL OK: {plan.commit} ({plan.ref}) on {disk} in "
        f"{time.monotonic() - start:.0f} s; {plan.finish}")
    if not args.no_finish:
        runner.run(["systemctl", "--no-block", plan.finish], what=f"systemctl {plan.finish}",
                   check=False, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
