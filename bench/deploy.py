"""Deploy benchmark: our deploy vs ``ostree admin deploy`` of the same commit, and the time
of a full failed-update cycle (3 bad boots + fallback) under systemd-nspawn.

Usage: .venv/bin/python bench/deploy.py [--runs N] [--skip-cycle] [--trees lab|commit]
Trees: ``commit`` (default) = the v1/v2 minbase trees of bench/commit.py (v2 adds strace and
curl), ostree-ified (``etc`` -> ``usr/etc``, a dummy kernel); ``lab`` = the device test tree
(systemd, dbus, python3). Both deploys run on identical copies of the same sysroot, interleaved,
best of N; ours includes its cleanup/prune as ``ostree admin deploy`` does.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from atomicedge.device import deploy as dp
from atomicedge.device import ops
from atomicedge.device import sysroot as sr
from atomicedge.device.origin import Origin
from atomicedge.lab import nspawn, testtree
from atomicedge.ostree.repo import Repo

REF = "edge/stable"


def _rm(path: Path) -> None:
    """ostree marks deployment roots immutable (chattr +i): clear that, then delete."""
    for d in path.glob("ostree/deploy/*/deploy/*"):
        if d.is_dir():
            subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    shutil.rmtree(path)


def _commit_tree(repo: Repo, w: Path, name: str, which: str) -> str:
    from atomicedge.ostree.commit import commit_directory
    if which == "lab":
        return testtree.lab_commit(repo, w, name, REF)
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_commit",
                                                  Path(__file__).with_name("commit.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tree = testtree.ostreeify(mod.ensure_tree(name), w / f"tree-{name}", version=name)
    try:
        return commit_directory(repo, tree, branch=REF, subject=name)
    finally:
        shutil.rmtree(tree)


def _deploy_compare(w: Path, runs: int, which: str) -> dict[str, float]:
    s = sr.init_fs(w / "base")
    sr.os_init(s, "edge")
    v1 = _commit_tree(s.repo, w, "v1", which)
    dp.deploy(s, "edge", v1, Origin.new(REF), ["rw"])
    v2 = _commit_tree(s.repo, w, "v2", which)
    ours, theirs = [], []
    for i in range(runs):
        for who in ("ours", "ostree"):
            dest = w / f"{who}-{i}"
            subprocess.run(["cp", "-a", str(w / "base"), str(dest)], check=True)
            subprocess.run(["sync"], check=True)
            t = time.perf_counter()
            if who == "ours":
                sysroot = sr.Sysroot.open(dest)
                dp.deploy(sysroot, "edge", v2, Origin.new(REF))
                dp.cleanup(sysroot)
                ours.append(time.perf_counter() - t)
            else:
                subprocess.run(["ostree", "admin", f"--sysroot={dest}", "deploy", "--os=edge",
                                REF], check=True, capture_output=True)
                theirs.append(time.perf_counter() - t)
            _rm(dest)
    o, t2 = min(ours), min(theirs)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {"ours_s": round(o, 3), "ostree_s": round(t2, 3), "ratio": round(o / t2, 2),
            "ours_median_s": round(mo, 3), "ostree_median_s": round(mt, 3),
            "median_ratio": round(mo / mt, 2)}


def _failed_cycle(w: Path) -> dict[str, float]:
    repo = Repo.init(w / "repo", "archive")
    testtree.lab_commit(repo, w, "1.0", REF)
    ops.install(w / "dev", "edge", f"file://{w}/repo", REF)
    sysroot = ops.open_sysroot(str(w / "dev"))
    testtree.lab_commit(repo, w, "2.0-bad", REF)
    lab = sysroot.stateroot("edge") / "var/lib/atomicedge-lab"
    lab.mkdir(parents=True)
    (lab / "next.sh").write_text("#!/bin/sh\n/usr/bin/atomicedge device upgrade\n"
                                 "systemctl reboot --no-block\n")
    t = time.perf_counter()
    run = nspawn.run(sysroot, max_boots=6, timeout=180, binds=(w / "repo",))
    total = time.perf_counter() - t
    per_boot = [round(b.seconds, 2) for b in run.boots]
    return {"boots": len(run.boots), "cycle_s": round(total, 1),
            "bad_boots_plus_fallback_s": round(sum(b.seconds for b in run.boots[1:]), 1),
            "per_boot_s": per_boot}  # type: ignore[dict-item]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-cycle", action="store_true")
    ap.add_argument("--trees", choices=("commit", "lab"), default="commit")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-", dir="/var/tmp") as tmp:
        w = Path(tmp)
        (w / "cmp").mkdir()
        res = _deploy_compare(w / "cmp", args.runs, args.trees)
        print(f"deploy v2 ({args.trees} trees, best of {args.runs}): ours {res['ours_s']} s, "
              f"ostree admin deploy {res['ostree_s']} s, ratio {res['ratio']}x (target <= 1.0); "
              f"medians {res['ours_median_s']} s vs {res['ostree_median_s']} s "
              f"= {res['median_ratio']}x")
        if not args.skip_cycle:
            (w / "cyc").mkdir()
            c = _failed_cycle(w / "cyc")
            print(f"failed-update cycle under nspawn: {c['boots']} boots "
                  f"(good boot + 3 bad + fallback) in {c['cycle_s']} s; "
                  f"bad boots + fallback {c['bad_boots_plus_fallback_s']} s; "
                  f"per boot {c['per_boot_s']}")
        _rm(w / "cmp")


if __name__ == "__main__":
    main()
