"""The demo's serve-and-update step runs end to end and reports the server's counters."""

from __future__ import annotations

import io
from pathlib import Path

from net_helpers import ostree_fsck
from rich.console import Console

from atomicedge.store import netdemo
from atomicedge.store.repo import Repo


def test_netdemo_installs_then_updates_through_a_delta(tmp_path: Path,
                                                       src_repo: tuple[Repo, str]) -> None:
    repo, v1 = src_repo
    buf = io.StringIO()
    out = netdemo.run(tmp_path / "work", repo.path, "main", Console(file=buf, width=100))
    assert out["v1"] == v1 and out["update"]["deltas"] == [out["delta"]]
    assert 0 < out["update"]["bytes"] < out["install"]["bytes"] / 5
    assert out["total"]["bytes"] == out["install"]["bytes"] + out["update"]["bytes"]
    assert "server totals" in buf.getvalue()
    client = Repo.open(out["client"])
    assert client.read_ref("main") == out["v2"]
    ostree_fsck(client.path)
