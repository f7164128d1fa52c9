"""Disk images that boot with real GRUB: ``edge-raw-image`` (raw) and ``qcow2``.

The disk is assembled from files, without any loop device (``losetup -P`` gives no partition
nodes on these machines, and a builder should not need them anyway):

1. an OSTree sysroot in a directory, made by the device's own code - ``init_fs``, ``os_init``,
   the remote, ``fetch.pull`` of the commit from the compose repository, ``deploy`` with the
   blueprint's kernel arguments - then the remote URL switched to the update server;
2. GRUB's i386-pc modules, ``grubenv`` and the ``boot/grub/grub.cfg -> ../loader/grub.cfg``
   link into that sysroot, so every later deployment change on the device rewrites the menu
   (:mod:`atomicedge.device.grubcfg`);
3. ``mkfs.ext4 -L root -d SYSROOT root.img`` and ``mkfs.vfat`` + mtools for the ESP (holding a
   ``grub-mkstandalone`` BOOTX64.EFI that finds the root by label);
4. an MBR disk (``sfdisk`` on the image file): p1 ESP (type ef, for OVMF), p2 root (83,
   bootable); ``boot.img`` into the MBR's first 440 bytes and ``core.img`` (``grub-mkimage``,
   prefix ``(hd0,msdos2)/boot/grub``) behind it, as ``grub-install`` would; the file systems
   copied in with ``dd``; ``qemu-img convert`` for qcow2.

One image boots BIOS (SeaBIOS) and UEFI (OVMF). The console is the first serial port.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from atomicedge import runner
from atomicedge.compose.build import DISK_TYPES
from atomicedge.device.installer import (
    BASE_KARGS,
    ESP_SECTORS,
    ESP_START,
    ROOT_LABEL,
    ROOT_START,
    SECTOR,
    install_sysroot,
)
from atomicedge.errors import UsageError
from atomicedge.ostree.repo import Repo
from atomicedge.remote import config as remotes

# SECTOR..BASE_KARGS: the layout is the device's too, the edge installer writes the same one
DEFAULT_UPDATE_URL = "http://10.0.2.2:8080"   # the host, as QEMU's user network shows it
GRUB_PC = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = ["biosdisk", "part_msdos", "part_gpt", "ext2", "normal", "linux", "loadenv",
                "test", "echo", "serial", "terminal", "configfile", "search", "search_label",
                "halt", "reboot"]
EFI_MODULES = ["part_gpt", "part_msdos", "ext2", "fat", "search", "search_label", "normal",
               "linux", "loadenv", "test", "echo", "serial", "terminal", "configfile", "halt",
               "reboot", "efi_gop", "all_video"]
NETWORK_FILE = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
ESP_CFG = (f"search --no-floppy --label {ROOT_LABEL} --set=root\n"
           "set prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n")


@dataclass
class DiskSpec:
    repo: Path                      # compose repository holding the commit
    ref: str
    commit: str
    output: Path
    image_type: str = "qcow2"
    update_url: str = DEFAULT_UPDATE_URL
    osname: str = "debian"
    remote: str = "edge"
    kargs: list[str] = field(default_factory=list)   # blueprint kernel.append, split
    root_size: int = 4 * 1024 ** 3
    agent: bool = False             # the vm command channel (atomicedge vm exec)
    dhcp: bool = False              # systemd-networkd DHCP when the commit has no network setup


def kargs_of(repo: Repo, commit: str) -> list[str]:
    """The blueprint's ``[customizations.kernel] append`` the compose recorded in the commit."""
    var = repo.load_commit(commit).metadata.get("atomicedge.kargs")
    return str(var.value).split() if var is not None else []


def check(spec: DiskSpec) -> None:
    if spec.image_type not in DISK_TYPES:
        raise UsageError(f"--type {spec.image_type!r} is not a disk image type",
                         f"use {' or '.join(DISK_TYPES)}")
    remotes.validate_url(spec.update_url, "--update-url")
    for tool in ("mkfs.ext4", "sfdisk", "grub-mkimage", "grub-mkstandalone", "mkfs.vfat",
                 "mcopy", "qemu-img"):
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is not installed (needed for --type {spec.image_type})",
                             "install deps/apt/vm.txt (make setup)")


def build(spec: DiskSpec) -> Path:
    """Write the disk image to ``spec.output`` (renamed into place when complete)."""
    check(spec)
    output = spec.output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".disk-", dir=output.parent))
    try:
        root = work / "sysroot"
        deployment = make_sysroot(root, spec)
        if spec.dhcp:
            install_network(root / deployment)
        if spec.agent:
            from atomicedge.compose.disk_agent import install_agent
            install_agent(root / deployment)
        install_grub_files(root)
        disk = work / "disk.raw"
        assemble(root, work, disk, spec.root_size)
        tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        if spec.image_type == "qcow2":
            runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(tmp)],
                       what="qemu-img convert", timeout=1800)
        else:
            os.rename(disk, tmp)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def make_sysroot(root: Path, spec: DiskSpec) -> Path:
    """The sysroot, deployed by the device code; returns the deployment dir (relative)."""
    return install_sysroot(root, f"file://{spec.repo.resolve()}", spec.ref, spec.commit,
                           spec.osname, spec.remote, [*BASE_KARGS, *spec.kargs],
                           spec.update_url).relative_to(root)


def install_network(deployment: Path) -> bool:
    """DHCP on the wired links with systemd-networkd, in the deployment's /etc, when the
    commit brings no network manager of its own (Image Builder's disks come up on DHCP too;
    a blueprint file in /etc/systemd/network/ with a lower number takes precedence)."""
    usr = deployment / "usr"
    managed = (usr / "sbin/NetworkManager").exists() or (deployment / "etc/network/interfaces"
                                                           ).exists()
    if managed or not (usr / "lib/systemd/systemd-networkd").exists():
        return False
    net = deployment / "etc" / "systemd" / "network"
    net.mkdir(parents=True, exist_ok=True)
    (net / "80-atomicedge-dhcp.network").write_text(NETWORK_FILE)
    sysd = deployment / "etc" / "systemd" / "system"
    # what `systemctl enable systemd-networkd` links (its Also=): wait-online makes units with
    # After=/Wants=network-online.target (e.g. a podman pull at boot) wait for the DHCP lease
    for wants, unit in (("multi-user.target.wants", "systemd-networkd.service"),
                        ("sockets.target.wants", "systemd-networkd.socket"),
                        ("network-online.target.wants", "systemd-networkd-wait-online.service")):
        (sysd / wants).mkdir(parents=True, exist_ok=True)
        link = sysd / wants / unit
        if not link.is_symlink():
            os.symlink(f"/usr/lib/systemd/system/{unit}", link)
    return True


def install_grub_files(root: Path) -> None:
    """GRUB's BIOS modules beside grub.cfg (``normal`` loads them from the prefix)."""
    dest = root / "boot" / "grub" / "i386-pc"
    dest.mkdir(parents=True, exist_ok=True)
    for p in GRUB_PC.iterdir():
        if p.suffix in (".mod", ".lst"):
            shutil.copy2(p, dest / p.name)


def assemble(root: Path, work: Path, disk: Path, root_size: int) -> None:
    """Partition table, GRUB boot code and both file systems into ``disk`` (no loop device)."""
    root_img, esp_img = work / "root.img", work / "esp.img"
    runner.run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-d", str(root), str(root_img),
                str(root_size // 1024) + "k"], what="mkfs.ext4", timeout=1800)
    make_esp(work, esp_img)
    root_sectors = root_size // SECTOR
    with open(disk, "wb") as f:
        f.truncate((ROOT_START + root_sectors) * SECTOR)
    table = ("label: dos\nunit: sectors\n"
             f"start={ESP_START}, size={ESP_SECTORS}, type=ef\n"
             f"start={ROOT_START}, size={root_sectors}, type=83, bootable\n")
    runner.run(["sfdisk", "--no-reread", "--no-tell-kernel", str(disk)], input_text=table,
               what="sfdisk")
    core = work / "core.img"
    make_core_img(core)
    with open(disk, "r+b") as f:
        f.write((GRUB_PC / "boot.img").read_bytes()[:440])   # keeps the partition table
        f.seek(SECTOR)
        f.write(core.read_bytes())
    _copy_into(esp_img, disk, ESP_START)
    _copy_into(root_img, disk, ROOT_START)


def make_core_img(core: Path) -> None:
    """GRUB's BIOS core image, finding its modules and grub.cfg on p2 (as grub-install)."""
    runner.run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos2)/boot/grub",
                *GRUB_MODULES], what="grub-mkimage")
    if core.stat().st_size > (ESP_START - 1) * SECTOR:
        raise UsageError("GRUB core.img does not fit before the first partition")


def make_esp(work: Path, esp: Path) -> None:
    cfg = work / "esp-grub.cfg"
    cfg.write_text(ESP_CFG)
    efi = work / "BOOTX64.EFI"
    runner.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi),
                f"--modules={' '.join(EFI_MODULES)}", f"boot/grub/grub.cfg={cfg}"],
               what="grub-mkstandalone", timeout=600)
    with open(esp, "wb") as f:
        f.truncate(ESP_SECTORS * SECTOR)
    runner.run(["mkfs.vfat", "-F", "32", "-n", "ESP", str(esp)], what="mkfs.vfat")
    runner.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], what="mmd")
    runner.run(["mcopy", "-i", str(esp), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], what="mcopy")


def _copy_into(src: Path, disk: Path, start_sector: int) -> None:
    """``dd conv=notrunc,sparse``: copy ``src`` into ``disk`` at a sector, skipping zeros."""
    block = 1 << 20
    zero = bytes(block)
    with open(src, "rb") as fin, open(disk, "r+b") as fout:
        fout.seek(start_sector * SECTOR)
        while chunk := fin.read(block):
            if chunk == zero[:len(chunk)]:
                fout.seek(len(chunk), os.SEEK_CUR)
            else:
                fout.write(chunk)
