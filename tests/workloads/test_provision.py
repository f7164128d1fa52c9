"""Provisioning files: one image, per-device settings; bad input named by file, line and key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from atomicedge.errors import UsageError
from atomicedge.workload import provision
from tests.lab.helpers import ATOMICEDGE

PRIMARY = """hostname = "edge1"

[vrrp]
role = "primary"
vip = "10.213.0.100/24"
advert_interval = 0.2

[app]
port = 8080
"""


def test_primary_gets_master_state_higher_priority_and_vrrpv3_for_sub_second_adverts() -> None:
    files = provision.etc_files(provision.parse(PRIMARY))
    conf = files["keepalived/keepalived.conf"]
    assert "state MASTER" in conf and "priority 150" in conf
    assert "advert_int 0.2" in conf and "version 3" in conf
    assert "10.213.0.100/24 dev eth0" in conf
    assert files["hostname"] == "edge1\n"
    listen = files["systemd/user/app-proxy.socket.d/10-listen.conf"]
    assert "ListenStream=10.213.0.100:8080" in listen and "FreeBind=true" in listen


def test_backup_defaults_to_lower_priority_and_whole_seconds_stay_vrrpv2() -> None:
    text = PRIMARY.replace("\"primary\"", "\"backup\"").replace("= 0.2", "= 1")
    conf = provision.keepalived_conf(provision.parse(text))
    assert "state BACKUP" in conf and "priority 100" in conf and "version 2" in conf


@pytest.mark.parametrize(("bad", "where"), [
    (PRIMARY.replace('"primary"', '"leader"'), "p.toml:4: vrrp.role: 'leader'"),
    (PRIMARY.replace("10.213.0.100/24", "10.213.0.300/24"), "p.toml:5: vrrp.vip:"),
    (PRIMARY.replace("10.213.0.100/24", "10.213.0.100"), "p.toml:5: vrrp.vip:"),
    (PRIMARY.replace("= 0.2", "= 0.005"), "p.toml:6: vrrp.advert_interval:"),
    (PRIMARY.replace("port = 8080", "port = 70000"), "p.toml:9: app.port:"),
    (PRIMARY.replace("port = 8080", "prot = 8080"), "p.toml:9: app.prot: unknown key"),
    (PRIMARY + "priority = 300\n", "p.toml:10: app.priority: unknown key"),
    (PRIMARY.replace("advert_interval = 0.2", "priority = 0"), "p.toml:6: vrrp.priority:"),
    (PRIMARY.replace('hostname = "edge1"', 'hostname = "Edge_1"'), "p.toml:1: hostname:"),
    (PRIMARY.replace("[vrrp]", "[vrrp"), "p.toml:3: not valid TOML"),
])
def test_bad_provisioning_is_refused_with_file_line_and_key(bad: str, where: str) -> None:
    with pytest.raises(UsageError) as exc:
        provision.parse(bad, "p.toml")
    assert str(exc.value).startswith(where), str(exc.value)


def test_install_refuses_a_bad_provisioning_file_before_writing_anything(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text(PRIMARY.replace('"primary"', '"leader"'))
    sysroot = tmp_path / "sysroot"
    proc = subprocess.run([ATOMICEDGE, "device", "install", "--sysroot", str(sysroot),
                           "--osname", "edge", "--url", str(tmp_path / "norepo"),
                           "--ref", "x", "--provision", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"{bad}:4: vrrp.role" in proc.stderr and "Traceback" not in proc.stderr
    assert not sysroot.exists()
