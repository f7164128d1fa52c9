"""mmdebstrap seam: install a resolved package set into an empty directory (root mode).

Why mmdebstrap: it installs real Debian packages with their maintainer scripts, needs no
network namespace tricks, and builds a minbase tree in ~13 s. The two gotchas of the machine
notes are handled here: a local ``file://`` repository needs the file-mirror-automount hook, and
a failed run can leave that hook's read-only bind mount inside the target, which is unmounted
before the half tree is deleted (the caller only ever sees a complete tree or none).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.apt import AptState

AUTOMOUNT_HOOKS = Path("/usr/share/mmdebstrap/hooks/file-mirror-automount")
# a whole image build (download, unpack, configure) on a busy 2-core machine: well above it
MMDEBSTRAP_TIMEOUT = 3600.0
# dracut must build a generic initramfs (the build host is not the device), trimmed to what an
# edge device boots from: an exclusive driver list (``drivers+=``, dracut's ``--drivers``) and no
# LUKS/LVM/RAID/multipath/NVDIMM/hibernation/virtiofs modules: 15 MB instead of Debian's 39 MB
# (71 kernel modules, not 803), half the initrd phase of a TCG boot. Debian's ostree-boot adds its
# 98ostree module through /etc/dracut.conf.d/ostree.conf. A blueprint file in /etc/dracut.conf.d
# changes it (``build.BLUEPRINT_DRACUT``; docs/booting.md "The initramfs").
DRACUT_CONF_FILE = "etc/dracut.conf.d/10-atomicedge.conf"
DRACUT_DRIVERS = (
    "virtio_blk virtio_scsi virtio_pci virtio_console sd_mod sr_mod ahci ata_piix",  # VMs, SATA
    "nvme usb_storage uas xhci_pci ehci_pci ohci_pci uhci_hcd",             # NVMe, USB disks
    "mmc_block sdhci_pci sdhci_acpi",                                       # SD cards, eMMC
    "ext4 crc32c_generic vfat nls_cp437 nls_iso8859_1 isofs squashfs loop overlay",  # fs
    "usbhid hid_generic")                                 # a USB keyboard for the rescue shell
DRACUT_OMIT = "crypt dm lvm mdraid dmraid multipath nvdimm lunmask resume virtiofs"
DRACUT_CONF = ('hostonly="no"\nhostonly_cmdline="no"\n'
               f'drivers+=" {" ".join(DRACUT_DRIVERS)} "\n'
               f'omit_dracutmodules+=" {DRACUT_OMIT} "\n')


# before any package: the configuration is in place when the kernel and dracut are set up
DRACUT_HOOK = (f'mkdir -p "$1/etc/dracut.conf.d" && printf %s {shlex.quote(DRACUT_CONF)} '
               f'> "$1/{DRACUT_CONF_FILE}"')
INITRAMFS_HOOK = (
    'for k in "$1"/boot/vmlinuz-*; do [ -e "$k" ] || continue; v="${k##*/vmlinuz-}"; '
    'if [ -x "$1/usr/bin/dracut" ]; then chroot "$1" env -u INITRD dracut -q --force '
    '"/boot/initrd.img-$v" "$v"; fi; done')


def drop_backups(target: Path) -> None:
    """Delete dpkg's ``*-old`` backups (status-old: the status before dpkg's last write). They
    record build history, not the installed system — an incremental build's differ from a clean
    one's — and nothing on a device reads them; dpkg writes a new one on its next change."""
    for backup in (target / "var/lib/dpkg").glob("*-old"):
        backup.unlink()


def unmount_below(target: Path) -> None:
    """Lazily unmount everything mounted at or below ``target`` (deepest first)."""
    prefix = str(target.resolve())
    mounts = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        tool.run(["umount", "-l", point], what=f"umount {point}", check=False)


def remove_tree(target: Path) -> None:
    if target.exists():
        unmount_below(target)
        shutil.rmtree(target, ignore_errors=True)


def build_tree(state: AptState, suite: str, includes: list[str], target: Path) -> None:
    """Run mmdebstrap --variant=minbase into ``target`` (must not exist); clean up on failure."""
    src_file = state.dir / "etc/sources.list.d" / state.sources.name
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
            f"--architectures={state.arch}",
            "--aptopt=APT::Install-Recommends \"false\"",
            f"--essential-hook={DRACUT_HOOK}"]
    if includes:
        argv.append("--include=" + ",".join(includes))
    # the kernel's and dracut's maintainer scripts would each build the initramfs (~2 min
    # apiece here); INITRD=No skips both and one generic build runs at the end instead
    argv.append(f"--customize-hook={INITRAMFS_HOOK}")
    if state.sources.offline_dir is not None:
        argv.append(f"--hook-dir={AUTOMOUNT_HOOKS}")
    argv += [suite, str(target), str(src_file)]
    try:
        tool.run(argv, what="mmdebstrap", env={**os.environ, "INITRD": "No"},
                 hint="see the apt error above; --verbose shows the command",
                 timeout=MMDEBSTRAP_TIMEOUT)
    except BaseException:
        remove_tree(target)
        raise
    unmount_below(target)
    drop_backups(target)
