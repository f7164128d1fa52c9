"""Pull benchmark: atomicedge vs ostree over HTTP on the Debian minbase v1/v2 trees.

Usage (after ``bench/commit.py`` has built the trees)::

    .venv/bin/python bench/pull.py [--no-scratch] [--keep]

One run, one kind of server (``atomicedge repo serve`` in a subprocess) for everything:

* initial pull of v1 into an empty bare-user repo: atomicedge vs ``ostree pull``, object by
  object, and (unless ``--no-scratch``) both clients with a from-scratch delta published
  (8 MB parts, so the client inflates one part while applying the previous one);
* the v1 -> v2 update, bytes on the wire as counted by the server's ``/stats``: atomicedge
  with its delta, ostree with ostree's delta, ostree object by object (and the crossings:
  ostree with our delta, atomicedge with ostree's delta).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from atomicedge.delta import generate as delta
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.remote.pull import pull

CACHE = Path(os.environ.get("ATOMICEDGE_CACHE", "/var/tmp/atomicedge-cache"))
WORK = Path("/var/tmp/atomicedge-bench-pull")
CLIENTS = WORK / "clients"  # a fresh journaled ext4, as on a device (see client_disk)
REF = "debian/bookworm/x86_64/edge"


def tree(name: str) -> Path:
    for cand in (CACHE / "bench" / f"{name}.tree", CACHE / "bench" / name):
        if cand.is_dir():
            return cand
    sys.exit(f"error: {CACHE}/bench/{name}.tree is missing (hint: run bench/commit.py first)")


def sh(*cmd: str | Path) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True,
                          text=True).stdout


class Served:
    """``atomicedge repo serve`` for one repo, in its own process (stopped by PID)."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atomicedge.publish.serve", "--repo", str(root),
             "--port", str(self.port)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("error: server did not start")

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/stats") as resp:
            return json.load(resp)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def build_servers(scratch: bool) -> tuple[Repo, Path, str, str]:
    WORK.mkdir(parents=True)
    ours = Repo.init(WORK / "srv-ours", "archive")
    t = time.perf_counter()
    v1 = commit_directory(ours, tree("v1"), branch=REF, subject="v1 minbase",
                          skip_special=True, generate_sizes=True, timestamp=1700000000)
    v2 = commit_directory(ours, tree("v2"), branch=REF, subject="v2 +strace +curl",
                          skip_special=True, generate_sizes=True, timestamp=1700086400)
    print(f"commits: {time.perf_counter() - t:.1f} s")
    # ostree's server repo shares the objects (hard links), gets ostree's own delta
    ostree_srv = WORK / "srv-ostree"
    sh("cp", "-al", ours.path, ostree_srv)
    t = time.perf_counter()
    gen = delta.generate(ours, v1, v2)
    print(f"atomicedge delta: {gen.total_size:,} bytes, {gen.bsdiff} bsdiff, "
          f"{time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    sh("ostree", f"--repo={ostree_srv}", "static-delta", "generate", "--from", v1, "--to", v2)
    print(f"ostree delta: {time.perf_counter() - t:.1f} s")
    if scratch:
        t = time.perf_counter()
        delta.generate(ours, None, v1, max_chunk_size=8_000_000)
        print(f"atomicedge scratch delta: {time.perf_counter() - t:.1f} s")
        sh("ostree", f"--repo={ostree_srv}", "static-delta", "generate", "--empty", "--to", v1)
    pubsum.update(ours)
    sh("ostree", f"--repo={ostree_srv}", "summary", "-u")
    return ours, ostree_srv, v1, v2


def ostree_client(path: Path, url: str) -> Path:
    sh("ostree", "init", f"--repo={path}", "--mode=bare-user")
    sh("ostree", f"--repo={path}", "remote", "add", "--no-gpg-verify", "origin", url)
    return path


def timed_ostree(path: Path, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = sh("ostree", f"--repo={path}", "pull", *args)
    return time.perf_counter() - t, out.strip().splitlines()[-1] if out.strip() else ""


def measured(server: Served, fn: object) -> tuple[int, object]:
    before = server.stats()["bytes"]
    result = fn()  # type: ignore[operator]
    return server.stats()["bytes"] - before, result


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _pull_ours(srv: Served, name: str, spec: str, **kw: bool) -> tuple[float, float]:
    repo = Repo.init(CLIENTS / name, "bare-user")
    def cpu() -> float:  # the pull's forked workers are reaped (and counted) by its end
        return _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    c, t = cpu(), time.perf_counter()
    pull(repo, srv.url, [spec], **kw)
    return time.perf_counter() - t, cpu() - c


def _pull_ostree(srv: Served, name: str, spec: str, *args: str) -> tuple[float, float]:
    client = ostree_client(CLIENTS / name, srv.url)
    c = _cpu(resource.RUSAGE_CHILDREN)
    secs, line = timed_ostree(client, *args, "origin", spec)
    print(f"    ostree: {line}")
    return secs, _cpu(resource.RUSAGE_CHILDREN) - c


def initial(srv: Served, v1: str, scratch: bool, runs: int) -> dict[str, float]:
    """Best and median of ``runs`` interleaved pulls per client (the first run of each
    is kept as ``client-ours``/``client-ostree`` for the update measurements)."""
    spec = f"{REF}@{v1}"
    kinds: dict[str, Callable[[str], tuple[float, float]]] = {
        "atomicedge_objects": lambda n: _pull_ours(srv, n, spec, disable_static_deltas=True),
        "ostree_objects": lambda n: _pull_ostree(srv, n, spec, "--disable-static-deltas"),
    }
    if scratch:
        kinds["atomicedge_scratch_delta"] = lambda n: _pull_ours(
            srv, n, spec, require_static_deltas=True)
        kinds["ostree_scratch_delta"] = lambda n: _pull_ostree(srv, n, spec)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    for run in range(runs):
        order = list(kinds) if run % 2 == 0 else list(reversed(kinds))
        for kind in order:
            name = {"atomicedge_objects": "client-ours", "ostree_objects": "client-ostree"
                    }.get(kind, kind) if run == 0 else f"{kind}-{run}"
            secs, cpu = kinds[kind](name)
            times[kind].append(secs)
            cpus[kind].append(cpu)
            print(f"  run {run + 1}: {kind:26s} {secs:6.2f} s wall, {cpu:6.2f} s CPU")
    out: dict[str, float] = {}
    for kind in kinds:
        out[f"{kind}_best_s"] = min(times[kind])
        out[f"{kind}_median_s"] = statistics.median(times[kind])
        out[f"{kind}_median_cpu_s"] = statistics.median(cpus[kind])
    return out


def updates(srv_ours: Served, srv_ostree: Served, v2: str) -> dict[str, int]:
    out: dict[str, int] = {}

    def copy(name: str, base: str) -> Path:
        dst = CLIENTS / name
        sh("cp", "-a", CLIENTS / base, dst)
        return dst

    ours = Repo.open(copy("up-ours", "client-ours"))
    out["atomicedge_delta"], res = measured(srv_ours, lambda: pull(ours, srv_ours.url, [REF]))
    assert res.stats.deltas, "atomicedge did not use the delta"  # type: ignore[attr-defined]
    ours2 = Repo.open(copy("up-ours-x", "client-ours"))
    out["atomicedge_with_ostree_delta"], _r = measured(
        srv_ostree, lambda: pull(ours2, srv_ostree.url, [REF]))
    for name, srv, args in (("ostree_delta", srv_ostree, ()),
                            ("ostree_objects", srv_ostree, ("--disable-static-deltas",)),
                            ("ostree_with_atomicedge_delta", srv_ours, ())):
        client = copy(f"up-{name}", "client-ostree")
        sh("ostree", f"--repo={client}", "remote", "delete", "origin")
        sh("ostree", f"--repo={client}", "remote", "add", "--no-gpg-verify", "origin", srv.url)
        out[name], _r = measured(srv, lambda c=client, a=args: timed_ostree(c, *a, "origin",
                                                                           REF))
    for name in ("up-ours", "up-ostree_delta"):
        sh("ostree", "fsck", f"--repo={CLIENTS / name}")
    assert Repo.open(CLIENTS / "up-ours").read_ref(REF) == v2
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-scratch", dest="scratch", action="store_false",
                    help="skip the scratch-delta pulls (saves ~2 minutes of generation)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved initial pulls per client")
    ap.add_argument("--keep", action="store_true", help=f"keep {WORK}")
    a = ap.parse_args()
    # ext4 without a journal skips recently freed inodes one by one when it allocates: a
    # big delete right before the pulls would make file creation 20x slower for whichever
    # client runs first. So the previous run's files go after the measurements.
    old = WORK.with_name(f"{WORK.name}.old-{os.getpid()}")
    if WORK.exists():
        WORK.rename(old)
    try:
        report(a)
    finally:
        shutil.rmtree(old, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    return 0


@contextlib.contextmanager
def client_disk() -> Iterator[None]:
    """Client repos on a fresh ext4 (with a journal) on a loop device.

    This machine's root filesystem is ext4 *without* a journal, where allocating an inode
    skips every recently freed one with a buffer lookup each: after any big delete, file
    creation is up to 20x slower for minutes, whichever client happens to run then. A
    device's /sysroot has a journal, so both clients get one here.
    """
    img = WORK / "clients.img"
    CLIENTS.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        print("note: not root, client repos stay on the host filesystem")
        yield
        return
    with open(img, "wb") as f:
        f.truncate(8 << 30)
    sh("mkfs.ext4", "-q", "-F", img)
    sh("mount", "-o", "loop", img, CLIENTS)
    try:
        yield
    finally:
        subprocess.run(["umount", str(CLIENTS)], check=False)
        img.unlink(missing_ok=True)


def report(a: argparse.Namespace) -> None:
    ours, ostree_srv, v1, v2 = build_servers(a.scratch)
    s1, s2 = Served(ours.path), Served(ostree_srv)
    with contextlib.ExitStack() as stack:
        stack.enter_context(client_disk())
        stack.callback(s2.stop)
        stack.callback(s1.stop)
        init = initial(s1, v1, a.scratch, max(1, a.runs))
        up = updates(s1, s2, v2)
    print(f"\ninitial pull of v1 into an empty bare-user repo (same server, {a.runs} runs):")
    for k, v in init.items():
        print(f"  {k:38s} {v:7.2f} s")
    for stat in ("best", "median"):
        print(f"  ratio atomicedge/ostree, objects, {stat:6s}       "
              f"{init[f'atomicedge_objects_{stat}_s'] / init[f'ostree_objects_{stat}_s']:5.2f}x"
              "  (target <= 0.5x)")
    if a.scratch:
        for stat in ("best", "median"):
            ours_s = init[f"atomicedge_scratch_delta_{stat}_s"]
            print(f"  ratio atomicedge/ostree, scratch delta, {stat:6s} "
                  f"{ours_s / init[f'ostree_scratch_delta_{stat}_s']:5.2f}x")
    print("\nv1 -> v2 update, bytes on the wire (server /stats):")
    for k, v in up.items():
        print(f"  {k:32s} {v / 1e6:7.2f} MB")
    print(f"  target: atomicedge_delta <= 9.5 MB -> "
          f"{'OK' if up['atomicedge_delta'] <= 9.5e6 else 'MISSED'}")
    print(json.dumps({"initial_s": init, "update_bytes": up}))


if __name__ == "__main__":
    sys.exit(main())
