"""Update agent config/ticks and staging/finalize, offline on tiny sysroots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from devhelpers import commit_tiny, ostree_status_ids, our_status_ids

from atomicedge.device import agent, ops
from atomicedge.device import deploy as dp
from atomicedge.device import sysroot as sr
from atomicedge.device.decision import Action
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.origin import Origin
from atomicedge.errors import FormatError
from atomicedge.ostree.repo import Repo

NOW = dt.datetime(2026, 11, 21, 3, 30, tzinfo=dt.UTC)


def test_agent_config_is_validated_field_by_field() -> None:
    cfg = agent.parse_config('policy = "apply"\nschedule = "*-*-* 04:00:00"\nsplay = "15min"\n'
                             '[window]\ndays = ["Sat", "Sun"]\nstart = "02:00"\n'
                             'length_minutes = 120\n')
    assert cfg.policy == "apply" and cfg.window is not None and cfg.window.contains(NOW)
    drop = agent.generator_dropins(cfg)
    assert "OnCalendar=*-*-* 04:00:00" in drop["atomicedge-agent.timer.d/50-schedule.conf"]
    assert "Sat,Sun *-*-* 02:00:00 UTC" in drop["atomicedge-apply.timer.d/50-window.conf"]
    for bad, field in (('policy = "sometimes"', "policy"), ('schedule = "every tuesday"',
                                                           "schedule"),
                       ('splay = "soon"', "splay"), ('[window]\ndays = ["Caturday"]', "window"),
                       ("policy = ", "TOML")):
        with pytest.raises(FormatError, match=field):
            agent.parse_config(bad)


@pytest.fixture
def device(tmp_path: Path) -> tuple[sr.Sysroot, Repo, list[str]]:
    src = Repo.init(tmp_path / "src", "archive")
    v1 = commit_tiny(src, tmp_path, "1")
    ops.install(tmp_path / "s", "testos", f"file://{tmp_path}/src", "testos/stable")
    return sr.Sysroot.open(tmp_path / "s"), src, [v1]


def test_agent_check_reports_and_stage_skips_denylisted(device: tuple[sr.Sysroot, Repo,
                                                                      list[str]],
                                                        tmp_path: Path) -> None:
    sysroot, src, _commits = device
    assert agent.tick(sysroot, agent.AgentConfig("none"), NOW).action is Action.NOTHING
    v2 = commit_tiny(src, tmp_path, "2")
    d = agent.tick(sysroot, agent.AgentConfig("check"), NOW)
    assert d.action is Action.REPORT
    assert ops.status(sysroot)["cached-update"] == {"checksum": v2}
    deny = ops.var_lib(sysroot, "testos") / "denylist"
    deny.parent.mkdir(parents=True, exist_ok=True)
    deny.write_text(f"{v2} rolled-back\n")
    d = agent.tick(sysroot, agent.AgentConfig("stage"), NOW)
    assert d.action is Action.NOTHING and "rolled back before" in d.reason
    assert len(sysroot.deployments()) == 1
    deny.write_text("")
    d = agent.tick(sysroot, agent.AgentConfig("stage"), NOW)
    assert d.action is Action.STAGE
    assert sysroot.deployments()[0].csum == v2  # offline: deployed directly
    assert our_status_ids(sysroot.path) == ostree_status_ids(sysroot.path)


def test_agent_waits_while_the_boot_is_on_trial(device: tuple[sr.Sysroot, Repo, list[str]],
                                               tmp_path: Path) -> None:
    sysroot, src, _ = device
    commit_tiny(src, tmp_path, "2")
    GrubEnv(sysroot.grubenv_path).write({"boot_counter": "2", "boot_success": "0"})
    d = agent.tick(sysroot, agent.AgentConfig("stage"), NOW)
    assert d.action is Action.NOTHING and "not confirmed" in d.reason


def test_stage_then_finalize_merges_etc_at_finalize_time_and_arms_counter(
        device: tuple[sr.Sysroot, Repo, list[str]], tmp_path: Path) -> None:
    sysroot, src, _ = device
    v2 = commit_tiny(src, tmp_path, "2")
    from atomicedge.device import fetch
    fetch.pull(sysroot.repo, "origin", "testos/stable")
    state = dp.stage(sysroot, "testos", v2, Origin.new("origin:testos/stable"))
    assert len(sysroot.deployments()) == 1          # boot config untouched by staging
    assert ops.status(sysroot)["deployments"][0]["staged"]
    d1 = sysroot.deployments()[0]
    (sysroot.deployment_dir(d1) / "etc" / "after-staging.conf").write_text("late edit\n")
    assert sysroot.repo.read_ref(dp.STAGED_REF) == v2   # protected from prune
    dp.cleanup(sysroot)
    assert sysroot.deployment_dir(state.deployment()).is_dir()
    new = dp.finalize(sysroot)
    assert new is not None and sysroot.deployments()[0].csum == v2
    assert (sysroot.deployment_dir(new) / "etc" / "after-staging.conf").read_text() == \
        "late edit\n"
    assert GrubEnv(sysroot.grubenv_path).read() == {"boot_counter": "3", "boot_success": "0"}
    assert dp.read_staged(sysroot) is None and dp.finalize(sysroot) is None
    assert our_status_ids(sysroot.path) == ostree_status_ids(sysroot.path)


def test_cleanup_pending_discards_a_staged_deployment(
        device: tuple[sr.Sysroot, Repo, list[str]], tmp_path: Path) -> None:
    sysroot, src, commits = device
    v2 = commit_tiny(src, tmp_path, "2")
    from atomicedge.device import fetch
    fetch.pull(sysroot.repo, "origin", "testos/stable")
    state = dp.stage(sysroot, "testos", v2, Origin.new("origin:testos/stable"))
    ops.cleanup(sysroot, pending=True)
    assert dp.read_staged(sysroot) is None
    assert not sysroot.deployment_dir(state.deployment()).exists()
    assert [d.csum for d in sysroot.deployments()] == commits
