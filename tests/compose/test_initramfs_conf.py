"""The edge image's dracut configuration: what mmdebstrap writes, how dracut (bash) reads it, and
that a changed configuration never reuses an initramfs made with the old one (cache keys,
incremental bases), while a blueprint file in /etc/dracut.conf.d makes the compose run dracut.

Cheap (no compose): the hook runs in sh on a temporary directory, the configuration is sourced
by bash as dracut does; tests/compose/test_initramfs.py checks the real composed initramfs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from atomicedge.compose import build, cache, incremental, mmdebstrap
from atomicedge.compose.blueprint import Blueprint, Customizations, FileSpec
from atomicedge.compose.depsolve import Resolution


def _sourced(conf: Path, var: str) -> list[str]:
    """``$var`` after bash sources ``conf`` the way dracut reads /etc/dracut.conf.d/*.conf."""
    out = subprocess.run(["bash", "-c", f'source "$1"; printf "%s" "${var}"', "dracut",
                          str(conf)], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_essential_hook_writes_the_trimmed_configuration_dracut_reads(
        tmp_path: Path) -> None:
    subprocess.run(["sh", "-c", mmdebstrap.DRACUT_HOOK, "exec", str(tmp_path)], check=True)
    conf = tmp_path / mmdebstrap.DRACUT_CONF_FILE
    assert conf.read_text() == mmdebstrap.DRACUT_CONF
    drivers = _sourced(conf, "drivers")
    # QEMU's disks and the root/ESP file systems, and common real storage
    for needed in ("virtio_blk", "virtio_scsi", "virtio_pci", "ext4", "vfat", "sd_mod", "ahci",
                   "nvme", "usb_storage", "mmc_block"):
        assert needed in drivers, needed
    assert _sourced(conf, "omit_dracutmodules") == mmdebstrap.DRACUT_OMIT.split()
    assert _sourced(conf, "hostonly") == ["no"]    # generic: the build host is not the device


def test_a_changed_dracut_configuration_gets_new_tree_cache_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    res = Resolution(("systemd",), (("systemd", "252", "amd64"),), (("InRelease", "x"),), "edge")
    before = cache.tree_key("debian-12", "bookworm", "amd64", res)
    monkeypatch.setattr(cache, "DRACUT_CONF", mmdebstrap.DRACUT_CONF + 'drivers+=" e1000e "\n')
    assert cache.tree_key("debian-12", "bookworm", "amd64", res) != before


def test_an_incremental_base_with_another_dracut_configuration_is_rebuilt(
        tmp_path: Path) -> None:
    cached = tmp_path / "cached" / mmdebstrap.DRACUT_CONF_FILE
    cached.parent.mkdir(parents=True)
    cached.write_text('hostonly="no"\nhostonly_cmdline="no"\n')     # the untrimmed era
    copy = tmp_path / "copy" / mmdebstrap.DRACUT_CONF_FILE
    copy.parent.mkdir(parents=True)
    os.link(cached, copy)                                          # a hard-linked working copy
    reason = incremental.sync_dracut_conf(tmp_path / "copy")
    assert reason is not None and "another" in reason
    assert copy.read_text() == mmdebstrap.DRACUT_CONF
    assert copy.stat().st_mode & 0o777 == 0o644
    assert cached.read_text() == 'hostonly="no"\nhostonly_cmdline="no"\n'  # cache untouched
    assert incremental.sync_dracut_conf(tmp_path / "copy") is None          # now current


def test_only_a_blueprint_file_in_dracut_conf_d_makes_the_compose_run_dracut(
        tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)

    def bp(*paths: str) -> Blueprint:
        files = tuple(FileSpec(p, "x\n") for p in paths)
        return Blueprint("gw", "", "1.0.0", "debian-12", customizations=Customizations(
            files=files))

    assert not build.blueprint_dracut(bp("/etc/dracut.conf.d/90-generic.conf"), tmp_path)
    (tmp_path / "usr/bin/dracut").write_text("")
    assert build.blueprint_dracut(bp("/etc/dracut.conf.d/90-generic.conf"), tmp_path)
    assert build.blueprint_dracut(bp("/etc/gw.conf", "/etc//dracut.conf.d/x.conf"), tmp_path)
    assert not build.blueprint_dracut(bp("/etc/gw.conf", "/etc/dracut.conf"), tmp_path)
    assert not build.blueprint_dracut(bp(), tmp_path)
