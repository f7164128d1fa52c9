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
