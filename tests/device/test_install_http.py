"""Install and upgrade from an HTTP remote (the store's pull client) served on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from devhelpers import commit_tiny, ostree_status_ids, our_status_ids

from atomicedge.device import ops
from atomicedge.device import sysroot as sr
from atomicedge.ostree.repo import Repo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Repo]]:
    repo = Repo.init(tmp_path / "served", "archive")
    port = _free_port()
    proc = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(tmp_path / "served")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", repo
    finally:
        proc.kill()
        proc.wait()


def test_install_and_upgrade_over_http(served: tuple[str, Repo], tmp_path: Path) -> None:
    url, repo = served
    v1 = commit_tiny(repo, tmp_path, "1")
    d = ops.install(tmp_path / "s", "testos", url, "testos/stable")
    assert d.csum == v1
    sysroot = sr.Sysroot.open(tmp_path / "s")
    assert ops.upgrade(sysroot, "testos").changed is False
    v2 = commit_tiny(repo, tmp_path, "2")
    res = ops.upgrade(sysroot, "testos")
    assert res.changed and res.checksum == v2
    assert [x.csum for x in sysroot.deployments()] == [v2, v1]
    assert our_status_ids(sysroot.path) == ostree_status_ids(sysroot.path)
    r = subprocess.run(["ostree", "fsck", f"--repo={sysroot.repo_path}"], capture_output=True)
    assert r.returncode == 0
