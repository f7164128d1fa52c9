"""Real boots under systemd-nspawn: good update, bad update with 3 failed boots + fallback,
the agent refusing the rolled-back commit, the by-hand second attempt, /etc and /var kept.

One scenario (7 boots) runs once per module; each test asserts one behaviour of it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from devhelpers import ostree_status_ids, our_status_ids

from atomicedge.device import ops
from atomicedge.device.grubenv import GrubEnv
from atomicedge.lab import nspawn, testtree
from atomicedge.ostree.repo import Repo

pytestmark = pytest.mark.slow
REF = "edge/stable"

BOOT1 = """
echo edge-node-01 > /etc/hostname
echo site=lab > /etc/edge-local.conf
rm -f /etc/motd
mkdir -p /var/lib/lab-data && echo keep > /var/lib/lab-data/keep
rm -f /etc/greenboot/orig.txt
systemctl show atomicedge-agent.timer --property=TimersCalendar \
  > /var/lib/atomicedge-lab/agent-timer.txt
/usr/bin/atomicedge device upgrade > /var/lib/atomicedge-lab/upgrade1.out 2>&1
echo rc=$? >> /var/lib/atomicedge-lab/upgrade1.out
/usr/bin/atomicedge device status --json > /var/lib/atomicedge-lab/status-staged.json
systemctl reboot --no-block
"""

BOOT2 = """
/usr/bin/atomicedge device upgrade > /var/lib/atomicedge-lab/upgrade2.out 2>&1
systemctl reboot --no-block
"""

FALLBACK = """
cp /run/motd.d/boot-status /var/lib/atomicedge-lab/motd-fallback.txt
printf 'policy = "stage"\\nschedule = "daily"\\n' > /run/agent.toml
/usr/bin/atomicedge device agent --once --config /run/agent.toml \
   > /var/lib/atomicedge-lab/agent.out 2>&1
echo rc=$? >> /var/lib/atomicedge-lab/agent.out
/usr/bin/atomicedge device status --json > /var/lib/atomicedge-lab/status-after-agent.json
rm -f /etc/greenboot/orig.txt
/usr/bin/atomicedge device upgrade > /var/lib/atomicedge-lab/upgrade3.out 2>&1
systemctl reboot --no-block
"""


def _write_next(var: Path, script: str) -> None:
    lab = var / "lib" / "atomicedge-lab"
    lab.mkdir(parents=True, exist_ok=True)
    (lab / "next.sh").write_text("#!/bin/sh\n" + script)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    w = tmp_path_factory.mktemp("lab")
    repo = Repo.init(w / "repo", "archive")
    v1 = testtree.lab_commit(repo, w, "1.0", REF)
    v2 = testtree.lab_commit(repo, w, "2.0", REF)
    repo.set_ref(REF, v1)  # v2 is published while v1 runs (boot 1)
    sysroot_path = w / "sysroot"
    ops.install(sysroot_path, "edge", f"file://{w}/repo", REF)
    sysroot = ops.open_sysroot(str(sysroot_path))
    var = sysroot.stateroot("edge") / "var"
    res: dict[str, Any] = {"v1": v1, "v2": v2, "grubenv": [], "ours": [], "ostree": [],
                           "etc2": None}
    _write_next(var, BOOT1)
    repo.set_ref(REF, v2)

    def on_boot(rec: nspawn.BootRecord) -> None:
        (w / f"console-{rec.number}.txt").write_text(rec.console)  # kept for diagnosis
        res["grubenv"].append(GrubEnv(sysroot.grubenv_path).read())
        res["ours"].append(our_status_ids(sysroot_path))
        res["ostree"].append(ostree_status_ids(sysroot_path))
        if rec.number == 1:
            d0 = sysroot.deployments()[0]
            etc = sysroot.deployment_dir(d0) / "etc"
            res["etc2"] = {p: (etc / p).read_text() if (etc / p).exists() else None
                           for p in ("hostname", "edge-local.conf", "motd",
                                     "atomicedge-release")}
            res["v3"] = testtree.lab_commit(repo, w, "3.0", REF)
            _write_next(var, BOOT2)
        if rec.number == 5:
            _write_next(var, FALLBACK)

    run = nspawn.run(sysroot, max_boots=9, timeout=180, on_boot=on_boot, binds=(w / "repo",))
    res["run"] = run
    log = var / "log" / "atomicedge" / "boots.jsonl"
    res["log"] = [json.loads(line) for line in log.read_text().splitlines()]
    res["lab"] = var / "lib" / "atomicedge-lab"
    res["var"] = var
    res["sysroot"] = sysroot
    return res


def test_seven_boots_follow_the_update_story(scenario: dict[str, Any]) -> None:
    run = scenario["run"]
    booted = [scenario["log"][i]["booted"] for i in range(len(scenario["log"]))]
    v1, v2, v3 = scenario["v1"], scenario["v2"], scenario["v3"]
    assert booted == [v1, v2, v3, v3, v3, v2, v3], run.console[-3000:]
    assert [b.rc for b in run.boots] == [133] * 6 + [0]


def test_good_update_is_staged_then_boots_green_with_old_as_rollback(
        scenario: dict[str, Any]) -> None:
    staged = json.loads((scenario["lab"] / "status-staged.json").read_text())
    assert staged["deployments"][0]["staged"] and \
        staged["deployments"][0]["checksum"] == scenario["v2"]
    boot2 = scenario["log"][1]
    assert boot2["health"] == "green" and boot2["booted_index"] == 0
    deps = boot2["status"]["deployments"]
    assert deps[0]["checksum"] == scenario["v2"] and deps[0]["booted"]
    assert deps[1]["checksum"] == scenario["v1"] and not deps[1]["booted"]
    # grubenv as the health check left it (boot 2 then staged v3, which re-armed it)
    env_after_check = boot2["status"]["grubenv"]
    assert env_after_check.get("boot_success") == "1"
    assert "boot_counter" not in env_after_check
    assert scenario["grubenv"][1] == {"boot_success": "0", "boot_counter": "3"}


def test_bad_update_boots_three_times_then_falls_back(scenario: dict[str, Any]) -> None:
    log = scenario["log"]
    assert [e["health"] for e in log[2:5]] == ["red"] * 3
    assert [e["boot_counter"] for e in log[2:5]] == [2, 1, 0]
    assert all(e["reboot"] for e in log[2:5])
    assert "01_check_upgrade.sh" in log[2]["required_failed"]
    fb = log[5]
    assert fb["fallback"] and fb["health"] == "green" and fb["booted"] == scenario["v2"]
    assert any("FALLBACK BOOT DETECTED" in m for m in fb["messages"])
    assert "FALLBACK BOOT DETECTED" in scenario["run"].console
    # the fallback became the default, before the by-hand retry
    after = json.loads((scenario["lab"] / "status-after-agent.json").read_text())
    assert after["deployments"][0]["checksum"] == scenario["v2"]
    assert after["deployments"][0]["booted"]
    assert scenario["v3"] in after["denylist"]


def test_motd_shows_the_fallback_and_timer_has_the_configured_schedule(
        scenario: dict[str, Any]) -> None:
    motd = (scenario["lab"] / "motd-fallback.txt").read_text()
    assert "Boot Status is GREEN" in motd and "FALLBACK BOOT DETECTED" in motd
    # the generator turned agent.toml's schedule = "daily" into the timer's OnCalendar=
    timer = (scenario["lab"] / "agent-timer.txt").read_text()
    assert "OnCalendar=daily" in timer or "*-*-* 00:00:00" in timer, timer


def test_agent_does_not_stage_the_rolled_back_commit(scenario: dict[str, Any]) -> None:
    out = (scenario["lab"] / "agent.out").read_text()
    assert "rolled back before" in out and "rc=77" in out
    after = json.loads((scenario["lab"] / "status-after-agent.json").read_text())
    assert not any(d["staged"] for d in after["deployments"])


def test_second_attempt_by_hand_succeeds(scenario: dict[str, Any]) -> None:
    last = scenario["log"][6]
    assert last["booted"] == scenario["v3"] and last["health"] == "green"
    assert last["status"]["deployments"][1]["checksum"] == scenario["v2"]
    assert scenario["v3"] not in last["status"]["denylist"]  # proven good now
    assert scenario["grubenv"][-1].get("boot_success") == "1"


def test_etc_edits_survive_the_upgrade_and_var_is_shared(scenario: dict[str, Any]) -> None:
    etc = scenario["etc2"]
    assert etc["hostname"] == "edge-node-01\n"       # modified: kept
    assert etc["edge-local.conf"] == "site=lab\n"    # added: kept
    assert etc["motd"] is None                       # deleted: stays deleted
    assert etc["atomicedge-release"] == "2.0\n"      # untouched: new default
    assert (scenario["var"] / "lib/lab-data/keep").read_text() == "keep\n"


def test_real_ostree_agrees_with_our_status_after_every_boot(scenario: dict[str, Any]) -> None:
    assert scenario["ours"] == scenario["ostree"]
    fsck = subprocess.run(["ostree", "fsck", f"--repo={scenario['sysroot'].repo_path}"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
