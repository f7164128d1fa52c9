"""`make demo`'s first act runs end to end and the real ostree accepts what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_store_act_commits_and_passes_real_fsck(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "atomicedge.cli.main", "demo", "--only",
                           "store", "--workdir", str(tmp_path / "demo")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "real ostree fsck: object fsck of 2 commits completed successfully" in proc.stdout
    assert "A    /usr/etc/edge-feature.conf" in proc.stdout
    assert "Latest Commit" in proc.stdout  # summary --view


def test_a_demo_whose_story_ended_elsewhere_names_what_did_not_happen() -> None:
    """`make demo` exits 1 (cmd_demo returns what this finds) when an act printed every step
    but the device did not end where the story says: e.g. auto-update left app v1 answering."""
    from atomicedge.cli.demo import missed_outcomes

    real = {"fallback_booted": True, "fallback_strace_absent": True, "final_booted_v2": True,
            "final_strace": True}
    good = {"store": {"commits": 2}, "real": real,
            "apps": {"updated": "hello from app v2 on edge1\n"},
            "device": {"fallback_seen": True, "final_commit_strace": True}}
    assert missed_outcomes(good) == []
    assert missed_outcomes({"store": {}}) == []             # acts that did not run: nothing
    bad = {**good, "apps": {"updated": "hello from app v1 on edge1\n"},
           "real": {**real, "final_booted_v2": False}, "device": {"fallback_seen": True}}
    missed = missed_outcomes(bad)
    assert len(missed) == 3, missed
    assert any(m.startswith("apps: after podman auto-update") and "app v1" in m for m in missed)
    assert any(m.startswith("real: the second attempt booted v2") for m in missed)
    assert any("final_commit_strace = None" in m for m in missed)
