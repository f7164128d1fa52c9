"""The GRUB menu the device writes, run in real GRUB (grub-emu) for every grubenv state.

The sysroot is made by our deploy code with the real-GRUB layout switched on
(``boot/grub/grub.cfg -> ../loader/grub.cfg``), so the grub.cfg under test is the one
``write_deployments`` wrote. Its counter script runs in GRUB 2.06's own script engine
(``grub-emu``, the userspace build of the same GRUB) from an ext4 image, so ``load_env`` and
``save_env`` touch a real grubenv. The one substitution: grub-emu has no ``linux`` loader, so
the entries' ``linux``/``initrd`` lines become ``halt`` after GRUB announced the entry it chose
(and the 1 s menu timeout becomes 0).
Per state, real GRUB, the emulated bootloader of the nspawn lab (``lab.bootloader.select``) and
``decision.grub_step`` must choose the same entry and leave the same grubenv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.device.devhelpers import commit_tiny

from atomicedge.device import deploy as dp
from atomicedge.device import grubcfg
from atomicedge.device import sysroot as sr
from atomicedge.device.decision import grub_step
from atomicedge.device.grubenv import GrubEnv, decode, encode
from atomicedge.device.origin import Origin
from atomicedge.lab import bootloader

COUNTERS = [None, "3", "2", "1", "0", "-1", "5", "99", "-7", "junk"]
SUCCESS = [None, "0", "1"]
OTHER = {"saved_entry": "1", "default": "1", "next_entry": "ostree-1"}


def _sysroot(tmp: Path, n: int) -> sr.Sysroot:
    s = sr.init_fs(tmp / "sysroot")
    sr.os_init(s, "testos")
    grubcfg.install_link(s.boot)
    for i in range(n):
        csum = commit_tiny(s.repo, tmp, f"{i + 1}.0")
        dp.deploy(s, "testos", csum, Origin.new("origin:testos/stable"), ["rw"])
    return s


def _env(counter: str | None, success: str | None, other: bool) -> dict[str, str]:
    env = dict(OTHER) if other else {}
    if counter is not None:
        env["boot_counter"] = counter
    if success is not None:
        env["boot_success"] = success
    return env


def _real_grub(s: sr.Sysroot, env: dict[str, str], work: Path) -> tuple[int, dict[str, str]]:
    """Boot the device's grub.cfg in grub-emu over an ext4 image of /boot/grub."""
    cfg = (s.boot / "grub" / "grub.cfg").read_text()  # follows the symlink to the live menu
    cfg = re.sub(r"^  (linux|initrd) .*$", "  halt", cfg, flags=re.M)
    cfg = cfg.replace("set timeout=1\n", "set timeout=0\n")   # no 1 s menu wait per state
    root = work / "fs"
    shutil.rmtree(root, ignore_errors=True)
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text(cfg)
    (root / "boot/grub/grubenv").write_bytes(encode(env))
    img = work / "boot.img"
    img.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", "8M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(root), str(img)], check=True)
    (work / "device.map").write_text(f"(hd0) {img}\n")
    out = subprocess.run(["grub-emu", "-m", str(work / "device.map"), "-r", "hd0",
                          "-d", "/boot/grub"], stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=120).stdout.decode(errors="replace")
    chosen = re.findall(r"atomicedge-grub: booting entry (\d+)", out)
    assert len(chosen) == 1, out
    raw = subprocess.run(["debugfs", "-R", "cat /boot/grub/grubenv", str(img)],
                         capture_output=True, check=True).stdout
    return int(chosen[0]), decode(raw)


def _emulated(s: sr.Sysroot, env: dict[str, str]) -> tuple[int, dict[str, str]]:
    GrubEnv(s.grubenv_path).write(env)
    choice = bootloader.select(s)
    return choice.index, GrubEnv(s.grubenv_path).read()


@pytest.mark.parametrize("n", [2, 1])
def test_real_grub_emulated_grub_and_grub_step_choose_the_same_entry(tmp_path: Path,
                                                                      n: int) -> None:
    s = _sysroot(tmp_path, n)
    assert os.readlink(s.boot / "grub" / "grub.cfg") == "../loader/grub.cfg"
    assert (s.boot / "loader" / "grub.cfg").is_file()
    work = tmp_path / "emu"
    work.mkdir()
    seen = set()
    for counter in COUNTERS:
        for success in SUCCESS:
            for other in (False, True) if counter in ("3", "-1", None) else (False,):
                env = _env(counter, success, other)
                step = grub_step(env, n)
                real = _real_grub(s, env, work)
                emulated = _emulated(s, env)
                assert real == (step.entry, step.env), (env, real, step)
                assert emulated == (step.entry, step.env), (env, emulated, step)
                seen.add(step.entry)
    assert seen == ({0, 1} if n == 2 else {0})   # the matrix reaches the fallback entry


def test_every_deployment_change_rewrites_the_menu_with_the_live_entries(tmp_path: Path) -> None:
    s = _sysroot(tmp_path, 2)
    menu = (s.boot / "grub" / "grub.cfg").read_text()
    deps = s.deployments()
    for i, d in enumerate(deps):
        assert f"ostree=/ostree/boot.{s.bootversion()}/testos/{d.bootcsum}/{d.bootserial}" in menu
        assert f"--id 'ostree-{i}'" in menu
    assert "linux /boot/ostree/testos-" in menu
    dp.rollback(s)
    after = (s.boot / "grub" / "grub.cfg").read_text()
    assert after != menu and f"/ostree/boot.{s.bootversion()}/" in after
    # the menu lives in loader.N: the swap made it live, the old one went with loader.<old>
    assert sorted(p.name for p in s.boot.glob("loader.*")) == [f"loader.{s.bootversion()}"]
    dp.undeploy(s, 1)
    assert (s.boot / "grub" / "grub.cfg").read_text().count("menuentry ") == 1


def test_a_lab_sysroot_without_real_grub_keeps_ostree_layout(tmp_path: Path) -> None:
    s = sr.init_fs(tmp_path / "sysroot")
    sr.os_init(s, "testos")
    csum = commit_tiny(s.repo, tmp_path, "1.0")
    dp.deploy(s, "testos", csum, Origin.new("origin:testos/stable"), ["rw"])
    assert not (s.boot / "loader" / "grub.cfg").exists()
    assert not (s.boot / "grub" / "grub.cfg").exists()
