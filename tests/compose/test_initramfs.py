"""The composed edge image's initramfs: trimmed, yet holding everything a disk boot needs, and a
blueprint can opt back into Debian's full generic one.

Real composes: the session's gateway v1 (``gateway_images``, shared) and one more compose of the
same blueprint plus ``/etc/dracut.conf.d/90-generic.conf`` (the package tree is the cached one;
dracut runs again in the compose). The initramfs is read from the commits (the newc archive
dracut wrote). That the trimmed one really boots is what tests/vm/ shows under QEMU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atomicedge.compose import incremental
from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, compose
from atomicedge.compose.validate import parse_text
from atomicedge.ostree import inspect
from atomicedge.ostree.repo import Repo
from tests.images import EXAMPLES, GatewayImages

pytestmark = pytest.mark.timeout(1800)
GENERIC = '''
[[customizations.files]]
path = "/etc/dracut.conf.d/90-generic.conf"
data = """# Debian's generic initramfs: every storage driver and file system again
drivers=""
omit_dracutmodules=""
"""
'''
# what a QEMU disk boot (virtio-blk or virtio-scsi, ext4 root, vfat ESP, ostree) and common
# real machines (SATA, NVMe, USB, SD/eMMC) need
NEEDED = ("kernel/drivers/block/virtio_blk.ko", "kernel/drivers/scsi/virtio_scsi.ko",
          "kernel/drivers/virtio/virtio_pci.ko", "kernel/fs/ext4/ext4.ko", "kernel/fs/fat/vfat.ko",
          "kernel/drivers/ata/ahci.ko", "kernel/drivers/nvme/host/nvme.ko",
          "kernel/drivers/usb/storage/usb-storage.ko", "kernel/drivers/mmc/core/mmc_block.ko")
DROPPED = ("kernel/fs/xfs/xfs.ko", "kernel/fs/btrfs/btrfs.ko", "kernel/drivers/md/dm-crypt.ko",
           "kernel/drivers/scsi/qla2xxx/qla2xxx.ko")


def _initramfs(repo: Repo, commit: str, tmp: Path) -> tuple[int, set[str]]:
    """(size, paths) of the commit's initramfs, paths with the kernel's module dir cut."""
    (kdir,) = [e.path for e in inspect.ls(repo, commit, "/usr/lib/modules")
               if e.kind == "d" and e.path.rstrip("/") != "/usr/lib/modules"]
    data = inspect.cat(repo, commit, f"{kdir}/initramfs.img")
    tree = tmp / "image"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "boot").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/dracut").write_text("")
    (tree / "boot/initrd.img-k").write_bytes(data)
    names = incremental._initramfs_files(tree) or set()
    prefix = kdir.lstrip("/") + "/"
    return len(data), {n[len(prefix):] if n.startswith(prefix) else n for n in names}


def test_the_composed_initramfs_is_trimmed_and_boots_qemu_and_common_hardware(
        gateway_images: GatewayImages, tmp_path: Path) -> None:
    size, files = _initramfs(Repo.open(gateway_images.repo), gateway_images.v1, tmp_path)
    print(f"\ngateway v1 initramfs: {size / 1e6:.1f} MB, {len(files)} entries")
    assert size < 20_000_000, size                       # Debian's generic one: 39 MB
    assert "usr/lib/ostree/ostree-prepare-root" in files
    assert "usr/lib/systemd/system/ostree-prepare-root.service" in files
    for path in NEEDED:
        assert path in files, path
    for path in (*DROPPED, "usr/lib/systemd/systemd-cryptsetup"):
        assert path not in files, path


def test_a_blueprint_dracut_file_brings_back_the_generic_initramfs(
        gateway_images: GatewayImages, tmp_path: Path) -> None:
    text = (EXAMPLES / "gateway-v1.toml").read_text() + GENERIC
    bp = parse_text(text, "gateway-generic.toml")
    res = compose(ComposeRequest(blueprint=bp, repo=tmp_path / "repo", sources=Sources.host(),
                                 ref=gateway_images.ref, parent="none"))
    assert res.tree_cached                              # same packages as v1: no mmdebstrap
    repo = Repo.open(tmp_path / "repo")
    assert "dracut with the blueprint's configuration" in " ".join(res.timings)
    size, files = _initramfs(repo, res.commit, tmp_path)
    print(f"\ngeneric initramfs: {size / 1e6:.1f} MB")
    for path in (*NEEDED, *DROPPED):
        assert path in files, path
    assert "usr/lib/ostree/ostree-prepare-root" in files
    conf = inspect.cat(repo, res.commit, "/usr/etc/dracut.conf.d/90-generic.conf").decode()
    assert 'drivers=""' in conf
