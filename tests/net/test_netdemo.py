"""The demo's serve-and-update step runs end to end and reports the server's counters."""

from __future__ import annotations

import io
from pathlib import Path

from net_helpers import make_tree, ostree_fsck
from rich.console import Console

from atomicedge.lab import demo_net as netdemo
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo


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


def test_netdemo_ships_an_existing_history_as_the_update(tmp_path: Path,
                                                         src_repo: tuple[Repo, str]) -> None:
    """As after act 2 (v1, then v2 with strace): v1 is installed and v2 is the update."""
    repo, v1 = src_repo
    v2 = commit_directory(repo, make_tree(tmp_path / "v2", 2), branch="main", subject="v2")
    out = netdemo.run(tmp_path / "work", repo.path, "main",
                      Console(file=io.StringIO(), width=100))
    assert (out["v1"], out["v2"]) == (v1, v2)
    assert out["update"]["deltas"] == [out["delta"]]
    assert repo.read_ref("main") == v2  # nothing was added on top of the real history
    assert Repo.open(out["client"]).read_ref("main") == v2
