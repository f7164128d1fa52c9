"""Under real systemd: a staged update survives a power cut (no ExecStop ran) and is applied
at the next orderly reboot; a failing wanted check does not fail the boot; a hung check is
killed at its timeout and counted as failed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atomicedge.device import ops
from atomicedge.lab import nspawn, testtree
from atomicedge.ostree.repo import Repo

pytestmark = pytest.mark.slow
REF = "edge/stable"

WANTED_FAIL = ("#!/bin/sh\necho 'wanted check says no'\nexit 1\n", 0o755)
HUNG = ("#!/bin/sh\nsleep 600\n", 0o755)
CONF = ("GREENBOOT_CHECK_TIMEOUT=3\n", 0o644)

POWER_CUT = """
rm -f /etc/greenboot/orig.txt
/usr/bin/atomicedge device upgrade > /var/lib/atomicedge-lab/upgrade.out 2>&1
/usr/bin/atomicedge device status --json > /var/lib/atomicedge-lab/status-staged.json
# power cut: no stop jobs, so the finalize unit's ExecStop never runs
systemctl reboot --force --force
"""

AFTER_CUT = """
# an /etc edit made after staging: the merge at finalize time must carry it over
rm -f /etc/greenboot/orig.txt
/usr/bin/atomicedge device status --json > /var/lib/atomicedge-lab/status-after-cut.json
systemctl is-active atomicedge-finalize-staged.service \
  > /var/lib/atomicedge-lab/finalize-active.txt 2>&1
systemctl reboot --no-block
"""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    w = tmp_path_factory.mktemp("cut")
    repo = Repo.init(w / "repo", "archive")
    v1 = testtree.lab_commit(repo, w, "1.0", REF, files={
        "usr/lib/greenboot/check/wanted.d/50_wanted_fail.sh": WANTED_FAIL})
    ops.install(w / "sysroot", "edge", f"file://{w}/repo", REF)
    v2 = testtree.lab_commit(repo, w, "2.0", REF, files={
        "usr/lib/greenboot/check/wanted.d/60_hung.sh": HUNG,
        "usr/etc/greenboot/greenboot.conf": CONF})
    sysroot = ops.open_sysroot(str(w / "sysroot"))
    var = sysroot.stateroot("edge") / "var"
    lab = var / "lib" / "atomicedge-lab"
    lab.mkdir(parents=True)
    (lab / "next.sh").write_text("#!/bin/sh\n" + POWER_CUT)

    def on_boot(rec: nspawn.BootRecord) -> None:
        (w / f"console-{rec.number}.txt").write_text(rec.console)
        if rec.number == 1:
            (lab / "next.sh").write_text("#!/bin/sh\n" + AFTER_CUT)

    run = nspawn.run(sysroot, max_boots=5, timeout=180, on_boot=on_boot,
                     binds=(w / "repo",))
    log = [json.loads(x) for x in (var / "log/atomicedge/boots.jsonl").read_text().splitlines()]
    return {"v1": v1, "v2": v2, "run": run, "log": log, "lab": lab}


def test_staged_update_survives_a_power_cut_and_applies_at_next_reboot(
        scenario: dict[str, Any]) -> None:
    staged = json.loads((scenario["lab"] / "status-staged.json").read_text())
    assert staged["deployments"][0]["staged"]
    after = json.loads((scenario["lab"] / "status-after-cut.json").read_text())
    assert after["deployments"][0]["staged"]                  # still staged after the cut
    assert after["deployments"][0]["checksum"] == scenario["v2"]
    assert (scenario["lab"] / "finalize-active.txt").read_text().strip() == "active"
    assert [e["booted"] for e in scenario["log"]] == [scenario["v1"], scenario["v1"],
                                                      scenario["v2"]]


def test_failing_wanted_check_keeps_the_boot_green(scenario: dict[str, Any]) -> None:
    first = scenario["log"][0]
    assert first["health"] == "green" and first["wanted_failed"] == ["50_wanted_fail.sh"]
    assert not first["reboot"]


def test_hung_check_times_out_and_counts_as_failed(scenario: dict[str, Any]) -> None:
    last = scenario["log"][2]
    assert last["timed_out"] == ["60_hung.sh"] and "60_hung.sh" in last["wanted_failed"]
    assert last["health"] == "green"  # it is a wanted check: no rollback
    assert "60_hung.sh TIMED OUT" in scenario["run"].console
