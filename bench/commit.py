#!/usr/bin/env python3
"""Benchmark: commit and checkout of a Debian 12 minbase tree, atomicedge vs the real ostree.

Builds (once, cached under $ATOMICEDGE_CACHE or /var/tmp/atomicedge-cache/bench) two trees
with mmdebstrap — v1 = minbase, v2 = minbase + strace + curl — then, in the same run and on
the same input, times ``ostree commit`` and ``atomicedge repo commit`` of v2 into fresh
archive and bare-user repos, plus checkouts, and prints the ratios atomicedge/ostree.

    .venv/bin/python bench/commit.py [--runs N]

Both tools run as separate processes (interpreter start-up is included for us), runs are
interleaved, and the best of N is reported, so noise from other load hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("ATOMICEDGE_CACHE", "/var/tmp/atomicedge-cache")) / "bench"
SOURCES = "/etc/apt/sources.list.d/debian.sources"
TREES = {"v1": [], "v2": ["strace", "curl"]}
ATOMICEDGE = [str(Path(sys.executable).with_name("atomicedge"))]


def ensure_tree(name: str) -> Path:
    """minbase (+ packages) from the machine's Debian sources, ready to commit."""
    tree = CACHE / f"{name}.tree"
    if tree.is_dir():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = CACHE / f"{name}.tmp"
    if not (raw / "usr/bin").is_dir():
        shutil.rmtree(raw, ignore_errors=True)
        include = [f"--include={','.join(TREES[name])}"] if TREES[name] else []
        mirror = [SOURCES] if Path(SOURCES).exists() else []
        print(f"building {name} with mmdebstrap ...", file=sys.stderr)
        subprocess.run(["mmdebstrap", "--variant=minbase", *include, "bookworm", str(raw),
                        *mirror], check=True, capture_output=True)
    work = CACHE / f"{name}.tree.tmp"
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["cp", "-a", str(raw), str(work)], check=True)
    for sub in ("dev", "proc", "sys", "run", "tmp"):  # device nodes cannot go in a commit
        for child in (work / sub).iterdir() if (work / sub).is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    work.rename(tree)
    return tree


def timed(cmd: list[str]) -> float:
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_commit(tree: Path, mode: str, runs: int, work: Path) -> tuple[float, float, Path]:
    best_o = best_a = float("inf")
    keep = work / f"ours-{mode}"
    for i in range(runs):
        o, a = work / f"o-{mode}-{i}", work / f"a-{mode}-{i}"
        subprocess.run(["ostree", f"--repo={o}", "init", f"--mode={mode}"], check=True)
        subprocess.run([*ATOMICEDGE, "repo", "init", "--repo", str(a), "--mode", mode],
                       check=True)
        best_o = min(best_o, timed(["ostree", f"--repo={o}", "commit", "-b", "bench",
                                    "--timestamp=@0", str(tree)]))
        best_a = min(best_a, timed([*ATOMICEDGE, "repo", "commit", "--repo", str(a), "-b",
                                    "bench", "--timestamp=@0", str(tree)]))
        shutil.rmtree(o)
        if i == runs - 1:
            a.rename(keep)
        else:
            shutil.rmtree(a)
    return best_o, best_a, keep


def bench_checkout(repo: Path, mode: str, runs: int, work: Path) -> tuple[float, float]:
    flags = ["-U"] if mode != "archive" else []
    best_o = best_a = float("inf")
    for i in range(runs):
        o, a = work / f"co-o-{mode}-{i}", work / f"co-a-{mode}-{i}"
        best_o = min(best_o, timed(["ostree", f"--repo={repo}", "checkout", *flags, "bench",
                                    str(o)]))
        best_a = min(best_a, timed([*ATOMICEDGE, "repo", "checkout", "--repo", str(repo),
                                    *flags, "bench", str(a)]))
        shutil.rmtree(o)
        shutil.rmtree(a)
    return best_o, best_a


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ensure_tree("v1")
    tree = ensure_tree("v2")
    files = sum(len(f) + len(d) for _, d, f in os.walk(tree))
    print(f"tree: {tree} ({files} entries)")
    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="run-") as tmp:
        work = Path(tmp)
        for mode in ("archive", "bare-user"):
            o, a, repo = bench_commit(tree, mode, args.runs, work)
            rows.append((f"commit {mode}", o, a))
            o, a = bench_checkout(repo, mode, args.runs, work)
            rows.append((f"checkout {mode}" + (" -U" if mode != "archive" else ""), o, a))
    print(f"{'operation':<22} {'ostree s':>9} {'atomicedge s':>13} {'ratio':>7}")
    for name, o, a in rows:
        print(f"{name:<22} {o:9.2f} {a:13.2f} {a / o:7.2f}x")
    print("targets: archive commit <= 0.30x, bare-user commit <= 0.70x, checkout <= 1.00x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
