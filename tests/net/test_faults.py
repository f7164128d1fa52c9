"""Must show 4: faults at every point of a pull never store a bad object; a retry finishes
by fetching only what is missing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultserver import KINDS, FaultServer, at, every
from net_helpers import ostree_fsck

from atomicedge.errors import AtomicEdgeError
from atomicedge.ostree import objects as ob
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from atomicedge.publish import summary as pubsum
from atomicedge.remote.pull import pull

FAST = dict(read_timeout=0.3, backoff=0.0)


def _all_objects_valid(repo: Repo) -> int:
    """Re-hash every stored object (the check a fault must never break)."""
    n = 0
    for csum, objtype in repo.iter_objects():
        if objtype == ObjectType.FILE:
            h, content = repo.load_content(csum)
            assert ob.content_checksum(h, content) == csum, csum
        elif objtype != ObjectType.COMMIT_META:
            data = repo.read_metadata_bytes(csum, objtype)
            assert hashlib.sha256(data).hexdigest() == csum, csum
        n += 1
    return n


def _missing(repo: Repo, total: set[tuple[str, ObjectType]]) -> int:
    return sum(1 for c, t in total if not repo.has_object(c, t))


@pytest.fixture
def tiny_repo(tmp_path: Path) -> tuple[Repo, str]:
    """A small commit (12 objects), so a fault can be injected at every request."""
    tree = tmp_path / "tiny"
    (tree / "etc").mkdir(parents=True)
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "etc/hostname").write_text("edge\n")
    (tree / "usr/lib/lib.so").write_bytes(bytes(range(256)) * 300)
    (tree / "usr/lib/data").write_bytes(b"\0" * 5000)
    (tree / "usr/lib/current").symlink_to("lib.so")
    repo = Repo.init(tmp_path / "tiny-src", "archive")
    csum = commit_directory(repo, tree, branch="main", subject="tiny")
    pubsum.update(repo)
    return repo, csum


@pytest.fixture(params=["threads", "forked"])
def workers(request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test through both fetch paths: pipelined threads and forked worker processes
    (forced for these small commits: tiny fork threshold and chunks, two workers even on
    a one-core machine)."""
    import atomicedge.remote.pull as pullmod
    from atomicedge.ostree import forkpool
    forked_batches = []
    if request.param == "forked":
        from atomicedge.remote.workers import Workers
        real = Workers.stage

        def counted(self: Workers, groups: list[Any], *args: Any) -> None:
            forked_batches.append(len(groups))
            real(self, groups, *args)

        monkeypatch.setattr(Workers, "stage", counted)
        monkeypatch.setattr(pullmod, "FORK_MIN", 1)
        monkeypatch.setattr(pullmod, "FORK_CHUNK", 3)
        monkeypatch.setattr(forkpool, "workers", lambda: 2)
    yield str(request.param)
    if request.param == "forked":
        assert forked_batches, "the forked path was never taken"


def _client(path: Path) -> Repo:
    repo = Repo.init(path, "bare-user")
    repo.config.set("core", "fsync", "false")
    repo.write_config()
    return Repo.open(path)


def test_clean_pull_through_the_fault_server(tmp_path: Path, src_repo: tuple[Repo, str]) -> None:
    with FaultServer(src_repo[0].path) as srv:
        res = pull(Repo.init(tmp_path / "d", "bare-user"), srv.url, ["main"], **FAST)
    assert res.refs["main"] == src_repo[1]


@pytest.mark.parametrize("kind", KINDS)
def test_fault_at_every_request_then_retry_fetches_only_missing(
        tmp_path: Path, tiny_repo: tuple[Repo, str], kind: str, workers: str) -> None:
    repo, csum = tiny_repo
    objects_of = reachable(repo, csum)
    with FaultServer(repo.path) as probe:
        pull(Repo.init(tmp_path / "probe", "archive"), probe.url, ["main"], **FAST)
        n_requests = probe.count
    failures = 0
    for index in range(n_requests):
        dst = _client(tmp_path / f"{kind}-{index}")
        with FaultServer(repo.path, at(index, kind), stall=0.6) as srv:
            try:
                pull(dst, srv.url, ["main"], retries=0, connections=2, **FAST)
            except AtomicEdgeError:
                failures += 1
        _all_objects_valid(dst)
        missing = _missing(dst, objects_of)
        with FaultServer(repo.path) as clean:
            res = pull(dst, clean.url, ["main"], **FAST)
        fetched = res.stats.metadata_fetched + res.stats.content_fetched
        assert fetched == missing, (index, fetched, missing)
        assert dst.read_ref("main") == csum and not dst.is_partial(csum)
        if index % 5 == 0:
            ostree_fsck(dst.path)
    assert failures > 0  # the faults did hit object downloads


def test_transient_faults_are_retried_within_one_pull(tmp_path: Path,
                                                      src_repo: tuple[Repo, str],
                                                      workers: str) -> None:
    """Every fourth request fails; retries absorb it. (A flipped byte in an unsigned
    summary can still parse, so content faults target objects: signatures cover the rest.)"""
    for kind in KINDS:
        dst = _client(tmp_path / kind)
        fault = every(4, kind)
        with FaultServer(src_repo[0].path, lambda i, p, f=fault: f(i, p) if
                         p.startswith("/objects/") else None, stall=0.6) as srv:
            res = pull(dst, srv.url, ["main"], retries=8, connections=4, **FAST)
        assert res.stats.retries > 0, kind
        assert dst.read_ref("main") == src_repo[1]
        assert _all_objects_valid(dst) > 0
    ostree_fsck(dst.path)


def test_interrupted_pull_keeps_finished_batches(tmp_path: Path, src_repo: tuple[Repo, str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 workers: str) -> None:
    """Objects are committed in batches, so an abort late in a pull keeps most of them."""
    import atomicedge.remote.pull as pullmod
    monkeypatch.setattr(pullmod, "BATCH", 5)
    repo, csum = src_repo
    dst = Repo.init(tmp_path / "d", "bare-user")
    with FaultServer(repo.path, lambda i, p: "reset" if p.endswith(".filez") and i > 30
                     else None) as srv, pytest.raises(AtomicEdgeError):
        pull(dst, srv.url, ["main"], retries=0, connections=1, **FAST)
    kept = sum(1 for _ in dst.iter_objects())
    assert kept > 10 and dst.is_partial(csum)
    with FaultServer(repo.path) as clean:
        res = pull(dst, clean.url, ["main"], **FAST)
    assert res.stats.metadata_fetched + res.stats.content_fetched < len(reachable(repo, csum))
    ostree_fsck(dst.path)


@pytest.mark.parametrize("cores", [1, 2], ids=["in-process", "forked-parts"])
@pytest.mark.parametrize("kind", ["flip", "truncate", "reset-mid", "wrong"])
def test_faults_during_a_delta_pull_never_store_bad_objects(
        tmp_path: Path, tiny_repo: tuple[Repo, str], kind: str, cores: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Several small parts, applied in this process or by forked workers (one per core)."""
    from atomicedge.delta import generate as delta
    from atomicedge.ostree import forkpool
    monkeypatch.setattr(forkpool, "workers", lambda: cores)
    repo, csum = tiny_repo
    gen = delta.generate(repo, None, csum, max_chunk_size=2000)
    assert gen.parts > 2
    pubsum.update(repo)
    with FaultServer(repo.path) as probe:
        res = pull(_client(tmp_path / "probe"), probe.url, ["main"], **FAST)
        assert res.stats.deltas == [csum] and res.stats.delta_parts == gen.parts
        n_requests = probe.count
    for index in range(n_requests):
        dst = _client(tmp_path / f"{kind}-{index}")
        with FaultServer(repo.path, at(index, kind)) as srv:
            try:
                pull(dst, srv.url, ["main"], retries=0, **FAST)
            except AtomicEdgeError:
                pass
        _all_objects_valid(dst)
        with FaultServer(repo.path) as clean:
            pull(dst, clean.url, ["main"], **FAST)
        assert dst.read_ref("main") == csum and not dst.is_partial(csum)
    ostree_fsck(dst.path)


@pytest.mark.parametrize("fork_min", ["100000", "1"], ids=["threads", "forked"])
def test_kill_9_during_a_pull_then_rerun_fetches_only_what_is_missing(
        tmp_path: Path, src_repo: tuple[Repo, str], fork_min: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    repo, csum = src_repo
    dst = _client(tmp_path / "d")
    exe = Path(sys.executable).parent / "atomicedge"
    total = len(reachable(repo, csum))
    with FaultServer(repo.path, delay=0.02) as srv:
        env = {**os.environ, "ATOMICEDGE_PULL_BATCH": "4",
               "ATOMICEDGE_PULL_FORK_MIN": fork_min}
        proc = subprocess.Popen([str(exe), "repo", "pull", "--repo", str(dst.path),
                                 "--no-progress", srv.url, "main"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while sum(1 for _ in dst.iter_objects()) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = sum(1 for _ in dst.iter_objects())
    assert 12 <= kept < total and dst.is_partial(csum)
    ostree_fsck(dst.path)
    with FaultServer(repo.path) as clean:
        res = pull(dst, clean.url, ["main"], **FAST)
    assert res.stats.metadata_fetched + res.stats.content_fetched == total - kept
    ostree_fsck(dst.path)


def test_pull_reconnects_when_the_server_closes_every_few_replies(
        tmp_path: Path, src_repo: tuple[Repo, str], workers: str) -> None:
    """nginx closes a keep-alive connection after ``keepalive_requests`` replies and says
    so; the pipelined requests sent past that point must go out again on a new
    connection, without counting as failures or fetching anything twice."""
    repo, csum = src_repo
    with FaultServer(repo.path) as probe:
        pull(_client(tmp_path / "probe"), probe.url, ["main"], **FAST)
        clean_requests = probe.count
    dst = _client(tmp_path / "d")
    with FaultServer(repo.path, close_every=5) as srv:
        res = pull(dst, srv.url, ["main"], retries=0, **FAST)
        served = srv.count
    assert res.stats.retries == 0
    assert res.stats.metadata_fetched + res.stats.content_fetched == len(reachable(repo, csum))
    assert served == clean_requests  # nothing was fetched twice
    ostree_fsck(dst.path)
