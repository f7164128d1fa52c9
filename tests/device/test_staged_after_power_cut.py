"""A power cut after finalize swapped the boot entries, before it cleared the staged state.

The update is then deployed (the default entry, booted at the next boot), not staged: status
must not list it a second time as "staged", the upgrade and apply logic must not see an update
waiting, and the next finalize only clears the state - even when the update was rolled back in
between (finalizing it again would undo the rollback). The same cut under QEMU, on a real boot
chain: tests/vm/test_vm_power_cut.py. The cut here is an exception raised at the fault point
right after the swap (the state on disk is what a killed process leaves at that step).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from devhelpers import commit_tiny

from atomicedge.device import agent, faults, fetch, ops
from atomicedge.device import deploy as dp
from atomicedge.device import sysroot as sr
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.origin import Origin
from atomicedge.ostree.repo import Repo

NOW = dt.datetime(2026, 11, 21, 3, 30, tzinfo=dt.UTC)


class Cut(Exception):
    pass


@pytest.fixture
def cut_after_swap(tmp_path: Path) -> Iterator[tuple[sr.Sysroot, str, str]]:
    """v1 installed, v2 staged, finalize cut right after the boot-entry swap."""
    src = Repo.init(tmp_path / "src", "archive")
    v1 = commit_tiny(src, tmp_path, "1")
    ops.install(tmp_path / "s", "testos", f"file://{tmp_path}/src", "testos/stable")
    sysroot = sr.Sysroot.open(tmp_path / "s")
    v2 = commit_tiny(src, tmp_path, "2")
    assert fetch.pull(sysroot.repo, "origin", "testos/stable") == v2
    dp.stage(sysroot, "testos", v2, Origin.new("origin:testos/stable"))

    def hook(name: str) -> None:
        if name == "after-swap":
            raise Cut(name)

    old = faults.set_hook(hook)
    try:
        with pytest.raises(Cut):
            dp.finalize(sysroot)
    finally:
        faults.set_hook(old)
    assert dp.read_staged(sysroot) is not None      # the cut left the state file behind
    assert [d.csum for d in sysroot.deployments()] == [v2, v1]
    yield sysroot, v1, v2


def test_status_shows_the_swapped_update_deployed_not_staged(
        cut_after_swap: tuple[sr.Sysroot, str, str]) -> None:
    sysroot, v1, v2 = cut_after_swap
    st = ops.status(sysroot)
    assert [(d["checksum"], d["staged"]) for d in st["deployments"]] == [(v2, False),
                                                                       (v1, False)]
    assert "staged" not in ops.format_status(st)
    assert dp.pending_staged(sysroot) is None


def test_no_update_waits_to_be_applied_after_the_swap(
        cut_after_swap: tuple[sr.Sysroot, str, str]) -> None:
    sysroot, _v1, _v2 = cut_after_swap
    res = ops.upgrade(sysroot, "testos")
    assert not res.changed, res.message
    go, reason = agent.apply_tick(sysroot, agent.AgentConfig("apply"), NOW, reboot=False)
    assert not go and reason == "no update staged"


def _booted(monkeypatch: pytest.MonkeyPatch, d: sr.Deployment) -> None:
    """What ``/`` is on a running device (a stat of ``/``): the one fake, no boot here."""
    monkeypatch.setattr(sr.Sysroot, "booted", lambda self, deps=None: d)


def test_the_next_finalize_on_the_new_boot_only_clears_the_state(
        cut_after_swap: tuple[sr.Sysroot, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sysroot, v1, v2 = cut_after_swap
    _booted(monkeypatch, sysroot.deployments()[0])         # GRUB saw the swap: v2 booted
    env = GrubEnv(sysroot.grubenv_path).update({"boot_success": "1"}, ("boot_counter",))
    d = dp.finalize(sysroot)
    assert d is not None and d.csum == v2
    assert dp.read_staged(sysroot) is None
    assert [x.csum for x in sysroot.deployments()] == [v2, v1]
    assert GrubEnv(sysroot.grubenv_path).read() == env


def test_a_finalize_on_the_old_boot_puts_the_update_on_trial_again(
        cut_after_swap: tuple[sr.Sysroot, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """GRUB read the menu from before the swap (not yet written home) and booted v1, whose
    health check then cleared the counter: v2's first boot must still be counted."""
    sysroot, v1, v2 = cut_after_swap
    _booted(monkeypatch, sysroot.deployments()[1])
    GrubEnv(sysroot.grubenv_path).update({"boot_success": "1"}, ("boot_counter",))
    dp.finalize(sysroot)
    assert dp.read_staged(sysroot) is None
    assert [x.csum for x in sysroot.deployments()] == [v2, v1]
    env = GrubEnv(sysroot.grubenv_path).read()
    assert (env.get("boot_counter"), env.get("boot_success")) == ("3", "0")


def test_a_finalize_after_a_rollback_does_not_deploy_the_update_again(
        cut_after_swap: tuple[sr.Sysroot, str, str]) -> None:
    sysroot, v1, v2 = cut_after_swap
    dp.rollback(sysroot)
    assert [x.csum for x in sysroot.deployments()] == [v1, v2]
    dp.finalize(sysroot)
    assert dp.read_staged(sysroot) is None
    assert [x.csum for x in sysroot.deployments()] == [v1, v2]
