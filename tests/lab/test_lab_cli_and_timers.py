"""Fast checks (no boots): the apply timer's configuration and rule, and the lab CLI's answers
to bad input (one line naming the problem, a hint, exit code != 0, nothing created)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from atomicedge.device import agent
from atomicedge.device.ops import install
from atomicedge.errors import FormatError
from atomicedge.ostree.repo import Repo
from tests.device.devhelpers import commit_tiny

SAT_0230 = dt.datetime(2026, 11, 21, 2, 30, tzinfo=dt.UTC)
MON_1200 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_apply_schedule_becomes_the_apply_timers_calendar_at_second_accuracy() -> None:
    cfg = agent.parse_config('policy = "stage"\nschedule = "*:*:0/5"\nsplay = "0"\n'
                             '[apply]\nschedule = "*:0/1"\n')
    assert cfg.apply_schedule == "*:0/1"
    drop = agent.generator_dropins(cfg)
    assert drop["atomicedge-agent.timer.d/50-schedule.conf"] == (
        "[Timer]\nOnCalendar=*:*:0/5\nRandomizedDelaySec=0\nAccuracySec=1s\n")
    assert drop["atomicedge-apply.timer.d/50-schedule.conf"] == (
        "[Timer]\nOnCalendar=\nOnCalendar=*:0/1\nAccuracySec=1s\n")


@pytest.mark.parametrize("text", ['[apply]\nschedule = "whenever"\n', "[apply]\n",
                                  'apply = "now"\n'])
def test_bad_apply_section_is_refused_naming_it(text: str) -> None:
    with pytest.raises(FormatError, match=r"\[apply\]"):
        agent.parse_config(text)


def test_apply_timer_reboots_only_into_a_staged_update_of_a_confirmed_boot() -> None:
    on = agent.parse_config('policy = "stage"\n[apply]\nschedule = "*:0/1"\n')
    windowed = agent.parse_config('policy = "apply"\n[window]\ndays = ["Sat"]\n'
                                  'start = "02:00"\nlength_minutes = 60\n')
    plain = agent.parse_config('policy = "stage"\n')
    assert agent.decide_apply(on, True, True, MON_1200)[0]
    assert not agent.decide_apply(on, False, True, MON_1200)[0]          # nothing staged
    assert not agent.decide_apply(on, True, False, MON_1200)[0]          # boot on trial
    assert not agent.decide_apply(plain, True, True, MON_1200)[0]        # no apply schedule
    assert agent.decide_apply(windowed, True, True, SAT_0230)[0]         # in the window
    assert not agent.decide_apply(windowed, True, True, MON_1200)[0]     # outside it


def _cli(lab_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atomicedge.cli.main", "lab", "--lab-dir",
                           str(lab_dir), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def tiny_sysroot(tmp_path: Path) -> Path:
    src = Repo.init(tmp_path / "src", "archive")
    commit_tiny(src, tmp_path, "1")
    install(tmp_path / "sysroot", "testos", f"file://{tmp_path}/src", "testos/stable")
    return tmp_path / "sysroot"


def test_lab_cli_refuses_bad_input_with_one_line_and_creates_nothing(
        tmp_path: Path, tiny_sysroot: Path) -> None:
    lab = tmp_path / "lab"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (("up", "Bad_Name", "--sysroot", str(tiny_sysroot)), "device name 'Bad_Name'"),
        (("up", "host", "--sysroot", str(tiny_sysroot)), "'host' names the lab's host side"),
        (("up", "edge1", "--sysroot", str(empty)), str(empty)),
        (("up", "edge1", "--sysroot", str(tiny_sysroot), "--ip", "10.9.9.9"),
         "--ip 10.9.9.9 is not a device address"),
        (("up", "edge1", "--sysroot", str(tiny_sysroot), "--ip", "10.213.0.1"),
         "the lab host's own address"),
        (("up", "edge1", "--sysroot", str(tiny_sysroot), "--ip", "nonsense"),
         "is not an IPv4 address"),
        (("exec", "nosuch", "--", "true"), "no lab device 'nosuch'"),
        (("exec", "nosuch"), "no command given"),
        (("down",), "which device?"),
        (("ip", "nosuch"), "no lab device 'nosuch'"),
    ]
    for args, message in cases:
        proc = _cli(lab, *args)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert _cli(tmp_path / "other", "up", "x", "--sysroot", str(tiny_sysroot), "--subnet",
                "8.8.8.0/24").returncode == 2
    # nothing was created: no namespace of this lab, no device records
    netns = json.loads((lab / "lab.json").read_text())["netns"]
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       text=True).stdout
    assert not (lab / "devices").exists()
    proc = _cli(lab, "ip", "host")
    assert proc.returncode == 0 and proc.stdout == "10.213.0.1\n"


def test_lab_down_all_removes_the_lab_network(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    assert _cli(lab, "host", "--", "true").returncode == 0     # creates the lab network
    netns = json.loads((lab / "lab.json").read_text())["netns"]

    def listed() -> str:
        return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns in listed()
    proc = _cli(lab, "down", "--all")
    assert proc.returncode == 0 and "lab network removed" in proc.stdout
    assert netns not in listed()
