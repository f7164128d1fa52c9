"""``GREENBOOT_MAX_BOOT_ATTEMPTS`` decides how often the bootloader tries an update.

greenboot arms ``boot_counter`` with it when an update is put on trial; before, the counter was
always 3 whatever greenboot.conf said.  The bootloader's countdown is the greenboot GRUB script
(:func:`grub_step`), the arming is the real finalize/deploy on a tiny sysroot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.device.devhelpers import commit_tiny, tiny_tree

from atomicedge.device import deploy as dp
from atomicedge.device import ops
from atomicedge.device import sysroot as sr
from atomicedge.device.decision import grub_step, max_boot_attempts
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.origin import Origin
from atomicedge.health import greenboot
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo

CONF = "greenboot/greenboot.conf"


@pytest.fixture
def device(tmp_path: Path) -> tuple[sr.Sysroot, Repo]:
    src = Repo.init(tmp_path / "src", "archive")
    commit_tiny(src, tmp_path, "1")
    ops.install(tmp_path / "s", "testos", f"file://{tmp_path}/src", "testos/stable")
    return sr.Sysroot.open(tmp_path / "s"), src


def _boots_until_fallback(sysroot: sr.Sysroot) -> list[int]:
    """Entries the bootloader picks while every boot fails (nobody sets boot_success=1)."""
    env = GrubEnv(sysroot.grubenv_path).read()
    entries: list[int] = []
    while not entries or entries[-1] == 0:
        step = grub_step(env, 2)
        entries.append(step.entry)
        env = step.env
        assert len(entries) < 50
    return entries


def test_finalize_arms_the_attempts_the_users_greenboot_conf_asks_for(
        device: tuple[sr.Sysroot, Repo], tmp_path: Path) -> None:
    sysroot, src = device
    etc = sysroot.deployment_dir(sysroot.deployments()[0]) / "etc"
    (etc / "greenboot").mkdir()
    (etc / CONF).write_text("# local policy\nGREENBOOT_MAX_BOOT_ATTEMPTS=5\n")
    v2 = commit_tiny(src, tmp_path, "2")
    from atomicedge.device import fetch
    fetch.pull(sysroot.repo, "origin", "testos/stable")
    dp.stage(sysroot, "testos", v2, Origin.new("origin:testos/stable"))
    assert dp.finalize(sysroot) is not None
    assert GrubEnv(sysroot.grubenv_path).read() == {"boot_counter": "5", "boot_success": "0"}
    assert _boots_until_fallback(sysroot) == [0, 0, 0, 0, 0, 1]  # five tries, then fallback


def test_offline_deploy_arms_with_the_conf_the_update_ships(
        device: tuple[sr.Sysroot, Repo], tmp_path: Path) -> None:
    sysroot, src = device
    tree = tiny_tree(tmp_path / "v2", "2")
    (tree / "usr/etc/greenboot").mkdir()
    (tree / "usr/etc" / CONF).write_text('GREENBOOT_MAX_BOOT_ATTEMPTS="2"\n')
    commit_directory(src, tree, branch="testos/stable", subject="v2")
    res = ops.upgrade(sysroot, "testos")
    assert res.changed and not res.staged  # offline: deployed and armed at once
    assert GrubEnv(sysroot.grubenv_path).read()["boot_counter"] == "2"
    assert _boots_until_fallback(sysroot) == [0, 0, 1]


def test_without_a_conf_the_update_gets_greenboots_three_attempts(
        device: tuple[sr.Sysroot, Repo], tmp_path: Path) -> None:
    sysroot, src = device
    commit_tiny(src, tmp_path, "2")
    assert ops.upgrade(sysroot, "testos").changed
    assert GrubEnv(sysroot.grubenv_path).read()["boot_counter"] == "3"


@pytest.mark.parametrize(("text", "attempts", "problem"), [
    ("", 3, False),
    ("GREENBOOT_MAX_BOOT_ATTEMPTS=7\n", 7, False),
    ("GREENBOOT_MAX_BOOT_ATTEMPTS='4'\n", 4, False),
    ("GREENBOOT_MAX_BOOT_ATTEMPTS=0\n", 3, True),
    ("GREENBOOT_MAX_BOOT_ATTEMPTS=-2\n", 3, True),
    ("GREENBOOT_MAX_BOOT_ATTEMPTS=lots\n", 3, True),
])
def test_the_attempts_value_is_read_like_greenboot_and_bad_values_are_named(
        text: str, attempts: int, problem: bool) -> None:
    got, why = max_boot_attempts(text)
    assert got == attempts and (why is not None) == problem
    if why:
        assert "GREENBOOT_MAX_BOOT_ATTEMPTS" in why
    assert greenboot.parse_conf(text).max_boot_attempts == attempts
