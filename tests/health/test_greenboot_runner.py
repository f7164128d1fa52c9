"""greenboot-compatible runner: ordering, required/wanted semantics, disabled checks, and the
per-check timeout + overall deadline greenboot lacks (a hung check counts as failed)."""

from __future__ import annotations

import time
from pathlib import Path

from atomicedge.device.decision import Health, HealthResult
from atomicedge.health import greenboot


def _script(root: Path, rel: str, body: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("#!/bin/bash\n" + body + "\n")
    p.chmod(0o755)


def test_required_failure_is_red_and_skips_later_required(tmp_path: Path) -> None:
    _script(tmp_path, "etc/greenboot/check/required.d/01_fail.sh", "exit 3")
    _script(tmp_path, "etc/greenboot/check/required.d/02_never.sh", "touch $0.ran")
    _script(tmp_path, "etc/greenboot/check/wanted.d/01_w.sh", "exit 0")
    res = greenboot.run_checks(tmp_path, log=lambda m: None)
    assert res.required_failed == ("01_fail.sh",) and res.status is Health.RED
    assert not (tmp_path / "etc/greenboot/check/required.d/02_never.sh.ran").exists()


def test_failing_wanted_check_stays_green(tmp_path: Path) -> None:
    _script(tmp_path, "usr/lib/greenboot/check/required.d/01_ok.sh", "exit 0")
    _script(tmp_path, "etc/greenboot/check/wanted.d/01_w.sh", "exit 1")
    res = greenboot.run_checks(tmp_path, log=lambda m: None)
    assert res == HealthResult(wanted_failed=("01_w.sh",)) and res.status is Health.GREEN


def test_hung_check_is_killed_at_its_timeout_and_counts_as_failed(tmp_path: Path) -> None:
    _script(tmp_path, "etc/greenboot/check/required.d/01_hang.sh", "sleep 600 & wait")
    (tmp_path / "etc/greenboot/greenboot.conf").write_text("GREENBOOT_CHECK_TIMEOUT=1\n")
    start = time.monotonic()
    res = greenboot.run_checks(tmp_path, log=lambda m: None)
    assert time.monotonic() - start < 10
    assert res.timed_out == ("01_hang.sh",) and res.status is Health.RED


def test_overall_deadline_stops_the_run(tmp_path: Path) -> None:
    for i in range(3):
        _script(tmp_path, f"etc/greenboot/check/wanted.d/0{i}_slow.sh", "sleep 5")
    (tmp_path / "etc/greenboot/greenboot.conf").write_text(
        "GREENBOOT_CHECK_TIMEOUT=30\nGREENBOOT_DEADLINE=1\n")
    start = time.monotonic()
    res = greenboot.run_checks(tmp_path, log=lambda m: None)
    assert time.monotonic() - start < 10
    assert res.deadline_hit and res.status is Health.RED


def test_disabled_healthchecks_and_non_executables_are_skipped(tmp_path: Path) -> None:
    _script(tmp_path, "etc/greenboot/check/required.d/01_off.sh", "exit 1")
    (tmp_path / "etc/greenboot/check/required.d/README").write_text("not a check")
    (tmp_path / "etc/greenboot/greenboot.conf").write_text(
        'DISABLED_HEALTHCHECKS=("01_off.sh")\nGREENBOOT_MAX_BOOT_ATTEMPTS=5\n')
    conf = greenboot.load_conf(tmp_path)
    assert conf.max_boot_attempts == 5
    assert greenboot.run_checks(tmp_path, conf, log=lambda m: None).status is Health.GREEN


def test_red_and_green_hooks_run_in_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _script(tmp_path, "usr/lib/greenboot/red.d/01.sh", f"echo usr >> {out}")
    _script(tmp_path, "etc/greenboot/red.d/01.sh", f"echo etc $GREENBOOT_FALLBACK >> {out}")
    greenboot.run_hooks(tmp_path, "red.d", log=lambda m: None, env={"GREENBOOT_FALLBACK": "1"})
    assert out.read_text() == "usr\netc 1\n"
