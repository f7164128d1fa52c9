"""``atomicedge device boot`` (the one-shot boot, no network) ends once a healthy boot of a
composed image has settled, instead of waiting for its timeout."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.sysroot import Sysroot
from tests.lab.helpers import ATOMICEDGE, copy_sysroot, remove_sysroot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def test_device_boot_powers_off_after_a_green_boot(installed: dict[str, Any],
                                                   tmp_path: Path) -> None:
    sysroot = copy_sysroot(installed["sysroot"], tmp_path / "sysroot")
    try:
        (deployment,) = (sysroot / "ostree/deploy/edge/deploy").glob("*.0")
        (deployment / "etc/atomicedge/agent.toml").write_text('policy = "none"\n')
        proc = subprocess.run([ATOMICEDGE, "device", "boot", "--sysroot", str(sysroot),
                               "--max-boots", "3", "--timeout", "240"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("boot ")]
        assert len(lines) == 1 and lines[0].startswith("boot 1: entry 0") \
            and "-> off" in lines[0], proc.stdout
        assert GrubEnv(Sysroot.open(sysroot).grubenv_path).read().get("boot_success") == "1"
    finally:
        remove_sysroot(sysroot)
