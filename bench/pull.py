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
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from atomicedge.store import delta, summary
from atomicedge.store.commit import commit_directory
from atomicedge.store.pull import pull
from atomicedge.store.repo import Repo

CACHE = Path(os.environ.get("ATOMICEDGE_CACHE", "/var/tmp/atomicedge-cache"))
WORK = Path("/var/tmp/atomicedge-bench-pull")
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
            [sys.executable, "-m", "atomicedge.store.serve", "--repo", str(root),
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
    shutil.rmtree(WORK, ignore_errors=True)
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
    summary.update(ours)
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


def initial(srv: Served, v1: str, scratch: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    ours = Repo.init(WORK / "client-ours", "bare-user")
    t = time.perf_counter()
    pull(ours, srv.url, [f"{REF}@{v1}"], disable_static_deltas=True)
    out["atomicedge_objects_s"] = time.perf_counter() - t
    oc = ostree_client(WORK / "client-ostree", srv.url)
    out["ostree_objects_s"], line = timed_ostree(oc, "--disable-static-deltas", "origin",
                                                 f"{REF}@{v1}")
    print(f"  ostree: {line}")
    if scratch:
        s1 = Repo.init(WORK / "client-ours-scratch", "bare-user")
        t = time.perf_counter()
        pull(s1, srv.url, [f"{REF}@{v1}"], require_static_deltas=True)
        out["atomicedge_scratch_delta_s"] = time.perf_counter() - t
        s2 = ostree_client(WORK / "client-ostree-scratch", srv.url)
        out["ostree_scratch_delta_s"], line = timed_ostree(s2, "origin", f"{REF}@{v1}")
        print(f"  ostree scratch: {line}")
    return out


def updates(srv_ours: Served, srv_ostree: Served, v2: str) -> dict[str, int]:
    out: dict[str, int] = {}

    def copy(name: str, base: str) -> Path:
        dst = WORK / name
        sh("cp", "-a", WORK / base, dst)
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
        sh("ostree", "fsck", f"--repo={WORK / name}")
    assert Repo.open(WORK / "up-ours").read_ref(REF) == v2
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-scratch", dest="scratch", action="store_false",
                    help="skip the scratch-delta pulls (saves ~2 minutes of generation)")
    ap.add_argument("--keep", action="store_true", help=f"keep {WORK}")
    a = ap.parse_args()
    ours, ostree_srv, v1, v2 = build_servers(a.scratch)
    s1, s2 = Served(ours.path), Served(ostree_srv)
    try:
        init = initial(s1, v1, a.scratch)
        up = updates(s1, s2, v2)
    finally:
        s1.stop()
        s2.stop()
    print("\ninitial pull of v1 into an empty bare-user repo (same server):")
    for k, v in init.items():
        print(f"  {k:32s} {v:7.2f} s")
    print(f"  ratio atomicedge/ostree         "
          f"{init['atomicedge_objects_s'] / init['ostree_objects_s']:7.2f}x  (target <= 0.5x)")
    if "atomicedge_scratch_delta_s" in init:
        ours_s = init["atomicedge_scratch_delta_s"]
        print(f"  ratio atomicedge (scratch delta) / ostree (objects)       "
              f"{ours_s / init['ostree_objects_s']:.2f}x")
        print(f"  ratio atomicedge (scratch delta) / ostree (scratch delta) "
              f"{ours_s / init['ostree_scratch_delta_s']:.2f}x")
    print("\nv1 -> v2 update, bytes on the wire (server /stats):")
    for k, v in up.items():
        print(f"  {k:32s} {v / 1e6:7.2f} MB")
    print(f"  target: atomicedge_delta <= 9.5 MB -> "
          f"{'OK' if up['atomicedge_delta'] <= 9.5e6 else 'MISSED'}")
    print(json.dumps({"initial_s": init, "update_bytes": up}))
    if not a.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
