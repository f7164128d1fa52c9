"""The device's Ignition first boot applied to a tree (no boot): users with ssh keys, files,
directories, links, units with their enablement links, exactly once; traversal refused.
useradd/usermod/groupadd are Debian's real tools (run with --prefix on the tree)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from atomicedge.compose import butane
from atomicedge.device import ignition
from atomicedge.device.image import install_device_files
from atomicedge.errors import UsageError

DATA = Path(__file__).parent / "data"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHelloProvisioningTestKeyOnly core@example"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A device tree with Debian's account databases reduced to root and the sudo group."""
    tree = tmp_path / "root"
    etc = tree / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nsudo:x:27:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nsudo:*::\n")
    shutil.copyfile("/etc/login.defs", etc / "login.defs")  # Debian's: user private groups
    (tree / "usr/lib/systemd/system").mkdir(parents=True)
    return tree


@pytest.fixture
def hello_ign(tmp_path: Path) -> Path:
    text, _ = butane.convert_file(DATA / "hello.bu")
    path = tmp_path / "hello.ign"
    path.write_text(text)
    return path


def entry(root: Path, db: str, name: str) -> list[str]:
    return next(ln.split(":") for ln in (root / "etc" / db).read_text().splitlines()
                if ln.split(":")[0] == name)


def test_first_boot_creates_the_user_key_files_and_enabled_unit(root: Path,
                                                                hello_ign: Path) -> None:
    done = ignition.first_boot(root, hello_ign)
    assert done is not None and "unit hello.service" in done
    uid, gid = int(entry(root, "passwd", "core")[2]), int(entry(root, "passwd", "core")[3])
    assert entry(root, "group", "core")[2] == str(gid)  # its own group, as on Debian
    assert "core" in entry(root, "group", "sudo")[3].split(",")
    keys = root / "home/core/.ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n"
    for path, mode in ((keys, 0o600), (keys.parent, 0o700)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode)
    motd = (root / "etc/hello/motd").stat()
    assert (root / "etc/hello/motd").read_text() == "Hello from Ignition!\n"
    assert (motd.st_uid, motd.st_gid, stat.S_IMODE(motd.st_mode)) == (uid, 0, 0o640)
    assert stat.S_IMODE((root / "var/lib/hello").stat().st_mode) == 0o750
    assert os.readlink(root / "etc/hello/current") == "/etc/hello/motd"
    unit = root / "etc/systemd/system/hello.service"
    assert "podman run -d --name hello-server" in unit.read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/hello.service"
    assert os.readlink(wants) == "/etc/systemd/system/hello.service"


def test_a_second_boot_does_not_apply_the_config_again(root: Path, hello_ign: Path) -> None:
    assert ignition.first_boot(root, hello_ign)
    marker = json.loads((root / ignition.MARKER).read_text())
    assert marker["source"] == str(hello_ign) and "user core" in marker["applied"]
    (root / "etc/hello/motd").write_text("changed by the admin\n")
    (root / "etc/systemd/system/multi-user.target.wants/hello.service").unlink()
    passwd = (root / "etc/passwd").read_text()
    assert ignition.first_boot(root, hello_ign) is None
    assert (root / "etc/hello/motd").read_text() == "changed by the admin\n"
    assert not (root / "etc/systemd/system/multi-user.target.wants/hello.service").exists()
    assert (root / "etc/passwd").read_text() == passwd


def test_provisioned_file_is_used_before_fw_cfg_and_fw_cfg_alone_works(root: Path,
                                                                      tmp_path: Path) -> None:
    def cfg(path: str) -> bytes:
        return json.dumps({"ignition": {"version": "3.3.0"}, "storage": {"directories": [
            {"path": path}]}}).encode()
    fw_cfg = tmp_path / "fw_cfg_raw"
    fw_cfg.write_bytes(cfg("/from-fw-cfg"))
    (root / ignition.PROVISIONED).parent.mkdir(parents=True)
    (root / ignition.PROVISIONED).write_bytes(cfg("/from-install"))
    ignition.first_boot(root, fw_cfg=fw_cfg)
    assert (root / "from-install").is_dir() and not (root / "from-fw-cfg").exists()
    (root / ignition.MARKER).unlink()
    (root / ignition.PROVISIONED).unlink()
    ignition.first_boot(root, fw_cfg=fw_cfg)
    assert (root / "from-fw-cfg").is_dir()


def test_no_config_at_all_is_a_quiet_first_boot(root: Path, tmp_path: Path) -> None:
    assert ignition.first_boot(root, fw_cfg=tmp_path / "absent") == []
    assert json.loads((root / ignition.MARKER).read_text())["source"] == "none"


@pytest.mark.parametrize("storage", [
    {"files": [{"path": "/../../escape", "contents": {"source": "data:,x"}}]},
    {"directories": [{"path": "/etc/../../escape"}]},
    {"links": [{"path": "/ok", "target": "/../../escape", "hard": True}]},
    {"files": [{"path": "/via-link/escape", "contents": {"source": "data:,x"}}]},
])
def test_paths_leaving_the_tree_are_refused_and_nothing_is_marked(root: Path, tmp_path: Path,
                                                                  storage: dict) -> None:
    os.symlink(str(tmp_path / "outside"), root / "via-link")
    (tmp_path / "outside").mkdir()
    config = {"ignition": {"version": "3.3.0"}, "storage": storage}
    with pytest.raises(UsageError, match=r"must be absolute without|outside the device tree"):
        ignition.apply(root, config)
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (tmp_path / "escape").exists() and not (root / ignition.MARKER).exists()


def test_remote_sources_and_wrong_hashes_are_refused(root: Path) -> None:
    def files(res: dict) -> dict:
        return {"ignition": {"version": "3.3.0"},
                "storage": {"files": [{"path": "/etc/x", "contents": res}]}}
    with pytest.raises(UsageError, match="is not a data: URL"):
        ignition.apply(root, files({"source": "http://192.0.2.1/x"}))
    with pytest.raises(UsageError, match=r"do not match verification\.hash"):
        ignition.apply(root, files({"source": "data:,abc", "verification": {
            "hash": "sha256-" + "0" * 64}}))
    assert not (root / "etc/x").exists()


def test_unsupported_sections_and_versions_are_refused() -> None:
    with pytest.raises(UsageError, match=r"ignition\.version .2\.2\.0. is not supported"):
        ignition.parse(b'{"ignition": {"version": "2.2.0"}}', "c.ign")
    with pytest.raises(UsageError, match=r"storage\.disks"):
        ignition.parse(b'{"ignition": {"version": "3.3.0"}, "storage": {"disks": [{}]}}', "c")


def test_masked_and_disabled_units(root: Path) -> None:
    (root / "usr/lib/systemd/system/vendor.service").write_text(
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/vendor.service", wants / "vendor.service")
    ignition.apply(root, {"ignition": {"version": "3.3.0"}, "systemd": {"units": [
        {"name": "vendor.service", "enabled": False,
         "dropins": [{"name": "10-x.conf", "contents": "[Service]\nNice=5\n"}]},
        {"name": "gone.service", "mask": True}]}})
    assert not (wants / "vendor.service").is_symlink()
    assert (root / "etc/systemd/system/vendor.service.d/10-x.conf").read_text().endswith("5\n")
    assert os.readlink(root / "etc/systemd/system/gone.service") == "/dev/null"


def test_images_carry_the_first_boot_unit_enabled(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    install_device_files(tmp_path)
    sysd = tmp_path / "usr/lib/systemd/system"
    text = (sysd / "atomicedge-ignition-firstboot.service").read_text()
    assert "ConditionPathExists=!/var/lib/atomicedge/ignition.done" in text
    assert "-m atomicedge.device.ignition" in text
    assert (sysd / "multi-user.target.wants/atomicedge-ignition-firstboot.service").is_symlink()


def test_device_install_refuses_a_bad_ignition_file_before_writing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ign"
    bad.write_text('{"ignition": {"version": "9.0.0"}}')
    sysroot = tmp_path / "sysroot"
    proc = subprocess.run([sys.executable, "-m", "atomicedge.cli.main", "device", "install",
                           "--sysroot", str(sysroot), "--osname", "edge", "--url",
                           str(tmp_path / "no-repo"), "--ref", "x", "--ignition", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "ignition.version '9.0.0'" in proc.stderr
    assert not sysroot.exists()
