"""The ``edge-installer`` image type: an ISO that installs the composed commit unattended from a
kickstart (seeds 000, 002, 004: disconnected sites), and ``mkksiso`` to embed another kickstart.

What the ISO boots is the commit itself - no second distro: its kernel and initramfs, with the
ISO's root directory as the root file system (``root=LABEL=ATOMICEDGE_INSTALL
rootfstype=iso9660 ro``) under systemd's tmpfs overlay (``systemd.volatile=overlay``), into
``atomicedge-installer.target`` (``systemd.unit=``). That root is a checkout of the commit with
its ``/etc`` made from ``/usr/etc`` plus the installer's two units; the one service runs the
image's own ``python3 -m atomicedge.device.installer`` (the shipped device closure), which does
the install (see that module). The ISO root also carries:

* ``/ostree/repo`` - an archive repository with the commit on its ref (Image Builder's place;
  the installer pulls from it with the device's verified pull);
* ``/ks.cfg`` - the kickstart; ``/atomicedge/install.json`` - the plan it was checked into on
  the host (:mod:`atomicedge.compose.kickstart`: unsupported lines are refused here, with their
  line, before anything is written; passwords hashed); ``/atomicedge/iso.json`` - ref, commit,
  label, kernel arguments;
* ``/atomicedge/target/`` - GRUB's boot.img and core.img and the ESP image for the target disk
  (made as for ``compose build --type qcow2``), ``/boot/grub`` - the ISO's own GRUB: BIOS
  El Torito (``i386-pc-eltorito``), UEFI (an ESP image with ``BOOTX64.EFI``), hybrid MBR/GPT
  so the same file also boots from a USB stick (``xorriso -as mkisofs`` as ``grub-mkrescue``
  calls it, but with real Rock Ridge owners and modes: ``-R``, not ``-r``).

``ostreesetup`` semantics (anaconda's): ``--osname`` is the stateroot, ``--remote`` the remote's
name and ``--url`` its URL on the installed system, ``--ref`` the origin; ``--nogpg`` turns off
``gpg-verify``. The commit always comes from the ISO - that is what a disconnected site needs -
so ``--ref`` must be the ISO's ref, and ``--url`` (http(s):// or Image Builder's
``file:///run/install/repo/ostree/repo``) is only where updates will come from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge import runner
from atomicedge.compose import disk
from atomicedge.compose import kickstart as kstart
from atomicedge.compose.custom.accounts import hash_password
from atomicedge.device import etcmerge
from atomicedge.device import installer as dev
from atomicedge.device import sysroot as sr
from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree.checkout import checkout
from atomicedge.ostree.repo import Repo

TYPE = "edge-installer"
LABEL = "ATOMICEDGE_INSTALL"
ISO_KARGS = ("rootfstype=iso9660", "ro", "systemd.volatile=overlay",
             "systemd.unit=atomicedge-installer.target", "console=tty0", "console=ttyS0,115200")
BIOS_MODULES = ["biosdisk", "iso9660", "normal", "linux", "search", "search_label",
                "configfile", "echo", "test", "serial", "terminal", "halt", "reboot"]
EFI_MODULES = ["part_gpt", "part_msdos", "iso9660", "fat", "search", "search_label", "normal",
               "linux", "configfile", "echo", "test", "serial", "terminal", "halt", "reboot",
               "efi_gop", "all_video"]
EFI_IMG_BYTES = 16 << 20
# what the initramfs needs to find the ISO and put the overlay on it (a trimmed dracut list
# must keep them: compose/mmdebstrap.py DRACUT_DRIVERS)
INITRAMFS_MODULES = ("isofs", "sr_mod", "overlay")
SHIPPED_INSTALLER = "usr/lib/python3/dist-packages/atomicedge/device/installer.py"
TOOLS = ("xorriso", "grub-mkimage", "grub-mkstandalone", "mkfs.vfat", "mmd", "mcopy",
         "openssl")
TARGET = "atomicedge-installer.target"
MASKED = ("timers.target",)         # no update agent, no apt timers while installing
SERVICE = "atomicedge-installer.service"
UNITS = {
    TARGET: """[Unit]
Description=atomicedge edge installer
Requires=basic.target {service}
After=basic.target
AllowIsolate=yes
""",
    SERVICE: """[Unit]
Description=Install the embedded commit onto the target disk (kickstart /ks.cfg)
After=basic.target

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 -m atomicedge.device.installer
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
"""}
ISO_GRUB_CFG = """serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=2
set default=0
menuentry {title} --id install {{
  echo 'atomicedge-installer-grub: loading the installer'
  linux /usr/lib/modules/{kver}/vmlinuz root=LABEL={label} {kargs}
  initrd /usr/lib/modules/{kver}/initramfs.img
}}
"""
EFI_CFG = ("search --no-floppy --label {label} --set=root\n"
           "set prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n")
DEFAULT_KICKSTART = """# atomicedge edge-installer: the kickstart this ISO was built with.
# Replace it with: atomicedge mkksiso YOUR.ks THIS.iso NEW.iso
text
zerombr
clearpart --all --initlabel
ostreesetup --osname={osname} --remote={remote} --url={url} --ref={ref} --nogpg
poweroff
"""


@dataclass
class InstallerSpec:
    repo: Path                      # compose repository holding the commit
    ref: str
    commit: str
    output: Path
    kickstart: Path | None = None   # None: DEFAULT_KICKSTART
    update_url: str = disk.DEFAULT_UPDATE_URL
    osname: str = "debian"
    remote: str = "edge"


# -- the kickstart, checked into a plan ------------------------------------------------------

def check_kickstart(text: str, name: str, meta: dict[str, Any]) -> kstart.Kickstart:
    """Parse (refusing unsupported lines) and check it against what the ISO carries."""
    ks = kstart.parse(text, name)
    if ks.ostree.ref != meta["ref"]:
        raise UsageError(f"{name}:{ks.ostree.line}: ostreesetup --ref={ks.ostree.ref}: this "
                         f"installer carries {meta['ref']} (commit {meta['commit'][:12]})",
                         f"use --ref={meta['ref']}")
    return ks


def _password(user: kstart.User, seed: str) -> str | None:
    pw = None
    if user.password is not None:
        pw = user.password if user.iscrypted else hash_password(user.password,
                                                                f"{seed}\0{user.name}")
    if user.lock:
        pw = "!" + (pw or "")
    return pw


def make_plan(ks: kstart.Kickstart, text: str, meta: dict[str, Any]) -> dev.Plan:
    seed = f"{meta['commit']}\0{hashlib.sha256(text.encode()).hexdigest()}"
    groups: dict[str, dict[str, Any]] = {}
    users = []
    for u in ks.users:
        for g in u.groups:
            groups.setdefault(g, {"name": g})
        entry: dict[str, Any] = {"name": u.name}
        if u.gid is not None:       # anaconda: the user's own group with that gid
            groups.setdefault(u.name, {"name": u.name, "gid": u.gid})
            entry["primaryGroup"] = str(u.gid)
        for key, value in (("groups", list(u.groups)), ("passwordHash", _password(u, seed)),
                           ("homeDir", u.homedir), ("uid", u.uid), ("shell", u.shell),
                           ("gecos", u.gecos)):
            if value:
                entry[key] = value
        users.append(entry)
    erase = any(a.split(":", 1)[1].split()[:1] == ["clearpart"] and "--all" in a
                for a in ks.accepted)
    posts = [dev.Post(p.line, p.body, p.interpreter, p.erroronfail, p.log) for p in ks.posts]
    return dev.Plan(
        kickstart_sha256=hashlib.sha256(text.encode()).hexdigest(), ref=meta["ref"],
        commit=meta["commit"], osname=ks.ostree.osname, remote=ks.ostree.remote,
        url=ks.ostree.url, gpg=ks.ostree.gpg, kargs=list(meta.get("kargs", [])), erase=erase,
        groups=list(groups.values()), users=users,
        rootpw=_password(ks.rootpw, seed) if ks.rootpw else None,
        sshkeys=list(ks.sshkeys), posts=posts,
        finish=ks.finish)


def iso_meta(repo: Repo, ref: str, commit: str) -> dict[str, Any]:
    c = repo.load_commit(commit)
    blueprint = c.metadata.get("atomicedge.blueprint")
    return {"format": 1, "label": LABEL, "ref": ref, "commit": commit, "version": c.version,
            "blueprint": str(blueprint.value) if blueprint is not None else None,
            "kargs": disk.kargs_of(repo, commit)}


# -- building the ISO ------------------------------------------------------------------------

def check_tools() -> None:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is not installed (needed for --type {TYPE})",
                             "install deps/apt/vm.txt (make setup)")


def build(spec: InstallerSpec) -> Path:
    """Write the installer ISO to ``spec.output`` (renamed into place when complete)."""
    check_tools()
    repo = Repo.open(spec.repo)
    meta = iso_meta(repo, spec.ref, spec.commit)
    if spec.kickstart is not None:
        text = _read_text(spec.kickstart)
        name = spec.kickstart.name
    else:
        text = DEFAULT_KICKSTART.format(osname=spec.osname, remote=spec.remote,
                                        url=spec.update_url, ref=spec.ref)
        name = "ks.cfg"
    plan = make_plan(check_kickstart(text, name, meta), text, meta)   # before any write
    output = spec.output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".installer-", dir=output.parent))
    try:
        root = work / "root"
        checkout(repo, spec.commit, root)
        kver = installer_root(root)
        embed_repo(repo, spec.ref, spec.commit, root / dev.REPO)
        write_medium_files(root, text, plan, meta)
        target_pieces(work, root / dev.TARGET_GRUB)
        title = f"Install {meta['blueprint'] or spec.ref} {meta['version'] or ''}".strip()
        iso_grub(work, root, kver, title)
        tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        make_iso(root, tmp)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "give a readable kickstart") from None


def installer_root(root: Path) -> str:
    """The checkout made bootable as the installer's root; returns the kernel version."""
    if not (root / SHIPPED_INSTALLER).is_file():
        raise UsageError("the commit does not ship atomicedge.device.installer (composed "
                         "before the installer existed)", "compose the blueprint again")
    kver, _vmlinuz, initramfs = sr.find_kernel(root)
    if initramfs is None:
        raise UsageError(f"the commit's kernel {kver} has no initramfs.img")
    missing = [m for m in INITRAMFS_MODULES if not _initramfs_has(initramfs, m)]
    if missing:
        raise UsageError(f"the commit's initramfs lacks {', '.join(missing)} (needed to boot "
                         "the installer from the ISO)", "keep them in the dracut driver list")
    etc = root / "etc"
    if etc.is_dir() and not any(etc.iterdir()):
        etc.rmdir()
    etcmerge.copy_tree(root / "usr" / "etc", etc)
    units = etc / "systemd" / "system"
    units.mkdir(parents=True, exist_ok=True)
    for name, text in UNITS.items():
        (units / name).write_text(text.format(service=SERVICE))
    for name in MASKED:
        (units / name).unlink(missing_ok=True)
        (units / name).symlink_to("/dev/null")
    ostree = root / "ostree"
    if ostree.is_symlink():        # the deployed layout's link; the ISO has the repo here
        ostree.unlink()
    ostree.mkdir(exist_ok=True)
    return kver


def _initramfs_has(initramfs: Path, module: str) -> bool:
    """Whether a gzip initramfs (after an optional early cpio) holds ``module``.ko*; images
    in another compression are not inspected (True)."""
    data = initramfs.read_bytes()
    pos = 0
    while data.startswith(b"070701", pos):          # an early uncompressed cpio (microcode)
        size, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
        trailer = data[pos + 110:pos + 110 + namesize - 1] == b"TRAILER!!!"
        pos = (((pos + 110 + namesize + 3) & ~3) + size + 3) & ~3
        if trailer:
            while pos < len(data) and data[pos] == 0:
                pos += 1
    if not data.startswith(b"\x1f\x8b", pos):
        return True
    body = zlib.decompressobj(wbits=31).decompress(data[pos:])
    return f"/{module}.ko".encode() in body


def embed_repo(repo: Repo, ref: str, commit: str, dest: Path) -> None:
    """An archive repository with only ``commit`` on ``ref`` (as the edge-commit tar)."""
    from atomicedge.remote.pull import pull
    sub = Repo.init(dest, mode="archive")
    pull(sub, f"file://{repo.path.resolve()}", [f"{ref}@{commit}"])
    sub.set_ref(ref, commit)


def write_medium_files(root: Path, text: str, plan: dev.Plan, meta: dict[str, Any]) -> None:
    (root / dev.KICKSTART).write_text(text)
    (root / dev.PLAN).parent.mkdir(parents=True, exist_ok=True)
    (root / dev.PLAN).write_text(plan.to_json())
    (root / dev.ISO_META).write_text(json.dumps(meta, indent=2) + "\n")


def target_pieces(work: Path, dest: Path) -> None:
    """GRUB's boot code and ESP for the target disk, exactly as the disk builder makes them."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(disk.GRUB_PC / "boot.img", dest / "boot.img")
    disk.make_core_img(dest / "core.img")
    esp_work = work / "esp"
    esp_work.mkdir()
    disk.make_esp(esp_work, dest / "esp.img")


def iso_grub(work: Path, root: Path, kver: str, title: str) -> None:
    """The ISO's own GRUB: menu, BIOS El Torito image + modules, UEFI image."""
    grub = root / "boot" / "grub"
    mods = root / dev.GRUB_MODULES_DIR
    mods.mkdir(parents=True, exist_ok=True)
    for p in disk.GRUB_PC.iterdir():
        if p.suffix in (".mod", ".lst"):
            shutil.copyfile(p, mods / p.name)
    quoted = "'" + title.replace("'", "") + "'"
    (grub / "grub.cfg").write_text(ISO_GRUB_CFG.format(title=quoted, kver=kver, label=LABEL,
                                                       kargs=" ".join(ISO_KARGS)))
    runner.run(["grub-mkimage", "-O", "i386-pc-eltorito", "-p", "/boot/grub", "-o",
                str(mods / "eltorito.img"), *BIOS_MODULES], what="grub-mkimage (El Torito)")
    cfg = work / "efi-grub.cfg"
    cfg.write_text(EFI_CFG.format(label=LABEL))
    efi = work / "BOOTX64.EFI"
    runner.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi),
                f"--modules={' '.join(EFI_MODULES)}", f"boot/grub/grub.cfg={cfg}"],
               what="grub-mkstandalone", timeout=600)
    img = grub / "efi.img"
    with open(img, "wb") as f:
        f.truncate(EFI_IMG_BYTES)
    runner.run(["mkfs.vfat", "-n", "EFIBOOT", str(img)], what="mkfs.vfat")
    runner.run(["mmd", "-i", str(img), "::/EFI", "::/EFI/BOOT"], what="mmd")
    runner.run(["mcopy", "-i", str(img), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], what="mcopy")


def make_iso(root: Path, output: Path) -> None:
    runner.run(["xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-R", "-V", LABEL,
                "-o", str(output),
                "-b", "boot/grub/i386-pc/eltorito.img", "-no-emul-boot", "-boot-load-size",
                "4", "-boot-info-table", "--grub2-boot-info",
                "--grub2-mbr", str(disk.GRUB_PC / "boot_hybrid.img"),
                "--efi-boot", "boot/grub/efi.img", "-efi-boot-part", "--efi-boot-image",
                "--protective-msdos-label", str(root)], what="xorriso (edge-installer ISO)",
               timeout=3600)


# -- mkksiso ---------------------------------------------------------------------------------

def read_iso_file(iso: Path, path: str) -> bytes:
    """One file of an ISO (``xorriso -osirrox on -extract``)."""
    if not iso.is_file():
        raise NotFoundError(f"{iso} does not exist")
    with tempfile.TemporaryDirectory(prefix="atomicedge-iso-") as tmp:
        out = Path(tmp) / "f"
        runner.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", path,
                    str(out)], what=f"xorriso -extract {path}", check=False, timeout=600)
        if not out.is_file():
            raise UsageError(f"{iso} has no {path}: not an atomicedge {TYPE} ISO",
                             "build one with: atomicedge compose build BP --type "
                             f"{TYPE} --output FILE.iso")
        return out.read_bytes()


def mkksiso(ks_path: Path, iso: Path, output: Path) -> dev.Plan:
    """A copy of ``iso`` whose kickstart is ``ks_path`` (checked first: nothing is written
    for a kickstart the installer would refuse). ``output`` may be ``iso`` itself."""
    check_tools()
    text = _read_text(ks_path)
    meta = json.loads(read_iso_file(iso, "/" + dev.ISO_META))
    plan = make_plan(check_kickstart(text, ks_path.name, meta), text, meta)
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="atomicedge-mkksiso-") as work:
        ks_file, plan_file = Path(work) / "ks.cfg", Path(work) / "install.json"
        ks_file.write_text(text)
        plan_file.write_text(plan.to_json())
        for f in (ks_file, plan_file):
            os.chmod(f, 0o644)
        try:
            runner.run(["xorriso", "-indev", str(iso.resolve()), "-outdev", str(tmp),
                        "-boot_image", "any", "replay",
                        "-map", str(ks_file), "/" + dev.KICKSTART,
                        "-map", str(plan_file), "/" + dev.PLAN], what="xorriso (mkksiso)",
                       timeout=3600)
            os.replace(tmp, output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return plan


def carried(iso: Path) -> tuple[str, dev.Plan]:
    """The kickstart an installer ISO carries and the plan its installer will run."""
    ks = read_iso_file(iso, "/" + dev.KICKSTART).decode()
    return ks, dev.Plan.from_json(read_iso_file(iso, "/" + dev.PLAN).decode())

