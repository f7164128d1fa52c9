"""The disk builder's layout, checked in the image file itself (no boot, a tiny commit).

What firmware and GRUB rely on: the MBR carries GRUB's boot.img and keeps the partition
table, core.img sits behind it, p1 is a FAT ESP with BOOTX64.EFI (OVMF), p2 the ext4 "root"
(bootable) holding the sysroot our device code deployed, with the menu link, grubenv, the
remote pointed at the update URL and the blueprint's kernel arguments in the menu. The
bad-input paths of ``atomicedge vm`` answer with one clear line.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.compose import disk
from atomicedge.ostree.repo import Repo
from tests.device.devhelpers import commit_tiny

REF = "testos/stable"


def _debugfs(img: Path, cmd: str) -> str:
    return subprocess.run(["debugfs", "-R", cmd, str(img)], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    work = tmp_path_factory.mktemp("disk")
    repo = Repo.init(work / "repo", mode="archive")
    csum = commit_tiny(repo, work, "1.0", ref=REF)
    out = work / "out" / "tiny.raw"
    disk.build(disk.DiskSpec(work / "repo", REF, csum, out, "edge-raw-image",
                             update_url="http://10.0.2.2:8080/repo", osname="testos",
                             kargs=["quiet", "net.ifnames=0"], root_size=512 << 20, agent=True))
    root = work / "root.img"
    start = disk.ROOT_START * disk.SECTOR
    subprocess.run(["dd", f"if={out}", f"of={root}", "bs=1M", f"skip={start}",
                    "iflag=skip_bytes", "status=none"], check=True)
    return out, root, csum


def test_mbr_has_grub_boot_code_and_an_esp_plus_a_bootable_root(raw: tuple[Path, Path, str]
                                                               ) -> None:
    out, _root, _c = raw
    data = out.read_bytes()[:1024]
    assert data[:440] == Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()[:440]
    assert data[510:512] == b"\x55\xaa"
    table = json.loads(subprocess.run(["sfdisk", "-J", str(out)], capture_output=True,
                                      check=True).stdout)["partitiontable"]["partitions"]
    assert [(p["start"], p["type"], p.get("bootable", False)) for p in table] == [
        (disk.ESP_START, "ef", False), (disk.ROOT_START, "83", True)]
    esp = out.with_name("esp.img")
    subprocess.run(["dd", f"if={out}", f"of={esp}", "bs=1M", f"skip={disk.ESP_START * 512}",
                    f"count={disk.ESP_SECTORS * 512}", "iflag=skip_bytes,count_bytes",
                    "status=none"], check=True)
    listing = subprocess.run(["mdir", "-i", str(esp), "::/EFI/BOOT"], capture_output=True,
                             text=True, check=True).stdout
    assert "BOOTX64" in listing


def test_root_holds_the_deployed_sysroot_with_menu_grubenv_and_update_remote(
        raw: tuple[Path, Path, str]) -> None:
    _out, root, csum = raw
    assert "root" in subprocess.run(["e2label", str(root)], capture_output=True, text=True,
                                    check=True).stdout
    assert "../loader/grub.cfg" in _debugfs(root, "stat /boot/grub/grub.cfg")
    menu = _debugfs(root, "cat /boot/loader/grub.cfg")
    assert "linux /boot/ostree/testos-" in menu
    assert ("root=LABEL=root rw console=ttyS0,115200 rd.shell=0 rd.emergency=reboot panic=10 "
            "quiet net.ifnames=0 ostree=/ostree/boot.") in menu
    assert _debugfs(root, "cat /boot/grub/grubenv").startswith("# GRUB Environment Block")
    assert "normal.mod" in _debugfs(root, "ls -l /boot/grub/i386-pc")
    config = _debugfs(root, "cat /ostree/repo/config")
    assert 'url=http://10.0.2.2:8080/repo' in config
    deploy = _debugfs(root, "ls /ostree/deploy/testos/deploy")
    assert f"{csum}.0" in deploy
    origin = _debugfs(root, f"cat /ostree/deploy/testos/deploy/{csum}.0.origin")
    assert f"refspec=edge:{REF}" in origin
    sysd = f"/ostree/deploy/testos/deploy/{csum}.0/etc/systemd/system"
    assert "vm-agent.py" in _debugfs(root, f"cat {sysd}/atomicedge-vm-agent.service")
    assert "/etc/systemd/system/atomicedge-vm-agent.service" in _debugfs(
        root, f"stat {sysd}/multi-user.target.wants/atomicedge-vm-agent.service")


@pytest.mark.parametrize("argv, needle", [
    (["vm", "run", "/nonexistent.qcow2", "--detach"], "does not exist"),
    (["vm", "kill", "nosuchvm"], "is not running"),
    (["vm", "exec", "nosuchvm", "--", "true"], "is not running"),
    (["vm", "run", "/etc/hostname", "--forward", "22", "--detach"], "--forward '22'"),
    (["vm", "run", "/etc/hostname", "--name", "Bad Name"], "invalid VM name"),
])
def test_vm_bad_input_is_one_clear_line(argv: list[str], needle: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATOMICEDGE_VM_DIR", str(tmp_path))
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and needle in err[0], err
