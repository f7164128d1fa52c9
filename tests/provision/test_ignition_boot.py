"""A composed image installed with ``device install --ignition`` and booted for real under
systemd-nspawn (the lab's bootloader; no QEMU here, so the config comes from the provisioning
file rather than fw_cfg): the first boot applies the config, the second does not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from atomicedge.compose import butane
from tests.lab.helpers import ATOMICEDGE, remove_sysroot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHelloProvisioningTestKeyOnly core@example"
# seed 003's shape (user with a key, an enabled hello.service); the unit records each start
# instead of pulling a container image, because the lab boot has no registry to pull from
FCC = f"""variant: fcos
version: 1.4.0
passwd:
  users:
    - name: core
      ssh_authorized_keys: ["{KEY}"]
storage:
  files:
    - path: /etc/hello/motd
      mode: 0640
      user: {{name: core}}
      contents: {{inline: "Hello from Ignition!"}}
systemd:
  units:
    - name: hello.service
      enabled: true
      contents: |
        [Unit]
        Description=A hello world unit!
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStartPre=/bin/mkdir -p /var/lib/hello
        ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >> /var/lib/hello/started'
        [Install]
        WantedBy=multi-user.target
"""


def boot(sysroot: Path) -> str:
    proc = subprocess.run([ATOMICEDGE, "device", "boot", "--sysroot", str(sysroot),
                           "--max-boots", "1", "--timeout", "240", "--console"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_first_boot_applies_ignition_once(gateway_images: Any, tmp_path: Path) -> None:
    ign = tmp_path / "hello.ign"
    config, _ = butane.convert(FCC, "hello.bu", strict=True)
    ign.write_text(json.dumps(config))
    sysroot = tmp_path / "sysroot"
    try:
        proc = subprocess.run([ATOMICEDGE, "device", "install", "--sysroot", str(sysroot),
                               "--osname", "edge", "--url", str(gateway_images.repo),
                               "--ref", gateway_images.ref, "--ignition", str(ign)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        (deployment,) = (sysroot / "ostree/deploy/edge/deploy").glob("*.0")
        (deployment / "etc/atomicedge/agent.toml").write_text('policy = "none"\n')
        var = sysroot / "ostree/deploy/edge/var"

        first = boot(sysroot)
        assert "ignition: user core" in first and "ignition: unit hello.service" in first, first
        assert any(ln.startswith("core:") for ln in
                   (deployment / "etc/passwd").read_text().splitlines())
        (keys,) = [p for p in (var / "home/core/.ssh/authorized_keys",
                               deployment / "home/core/.ssh/authorized_keys") if p.exists()]
        lines = keys.read_text().splitlines()
        assert lines.count(KEY) == 1  # Ignition's key, added once
        # the blueprint's key (gateway-v1.toml) seeded the file at first boot and is kept
        assert any(ln.endswith(" core@laptop") for ln in lines), lines
        assert (deployment / "etc/hello/motd").read_text() == "Hello from Ignition!"
        assert len((var / "lib/hello/started").read_text().split()) == 1  # started on boot 1
        assert (var / "lib/atomicedge/ignition.done").is_file()
        (deployment / "etc/hello/motd").write_text("edited after first boot\n")

        second = boot(sysroot)
        assert "ignition: user core" not in second, second
        assert (deployment / "etc/hello/motd").read_text() == "edited after first boot\n"
        ids = (var / "lib/hello/started").read_text().split()
        assert len(ids) == 2 and ids[0] != ids[1]  # still enabled: started on boot 2 too
        assert keys.read_text().splitlines() == lines  # tmpfiles did not rewrite the keys
    finally:
        remove_sysroot(sysroot)
