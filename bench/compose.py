"""Benchmark of the image builder (issue 4).

1. cold compose of a minbase-sized blueprint (empty compose cache: apt update, depsolve,
   mmdebstrap, customizations, OSTree preparation, commit into an archive repo)
2. the bare pipeline on the same inputs: ``mmdebstrap --variant=minbase`` + the minimum
   OSTree-ification (empty /dev etc., /etc -> /usr/etc) + ``ostree commit`` (archive repo)
3. warm recompose of the unchanged blueprint (same repo: the input hash matches the parent)
4. warm recompose into a fresh repo (tree cache hit, full customize + commit)
5. gateway v2 (v1 + strace, examples/) composed after v1: apt into v1's cached package tree
   instead of mmdebstrap (target <= 15 s), beside v1's and a clean v2's compose (issue 12)

Targets: cold / bare <= 1.1, warm recompose <= 2 s. Uses the machine's Debian mirror.
Run: .venv/bin/python bench/compose.py [--keep DIR]
Last: API status polls per second on 2 cores with 50 clients (the composer service,
issue 12; bench/composer_api.py runs it alone).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atomicedge.compose.apt import HOST_SOURCES, Sources
from atomicedge.compose.build import ComposeRequest, compose
from atomicedge.compose.mmdebstrap import remove_tree
from atomicedge.compose.validate import parse_text
from atomicedge.ostree.repo import Repo

BLUEPRINT = '''
name = "bench"
version = "1.0.0"
[customizations]
hostname = "bench"
[[customizations.user]]
name = "admin"
password = "bench"
groups = ["sudo"]
[[customizations.directories]]
path = "/etc/bench"
[[customizations.files]]
path = "/etc/bench/app.conf"
data = "x=1\\n"
'''


def bare_pipeline(work: Path) -> tuple[float, float]:
    """Returns (total seconds, of which ostree commit)."""
    tree, repo = work / "bare-tree", work / "bare-repo"
    start = time.monotonic()
    subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
                    "--aptopt=APT::Install-Recommends \"false\"", "bookworm", str(tree),
                    str(HOST_SOURCES)], check=True)
    for name in ("dev", "proc", "sys", "run", "tmp"):
        shutil.rmtree(tree / name)
        (tree / name).mkdir()
    (tree / "etc").rename(tree / "usr/etc")
    subprocess.run(["ostree", f"--repo={repo}", "init", "--mode=archive"], check=True)
    commit_start = time.monotonic()
    subprocess.run(["ostree", f"--repo={repo}", "commit", "--branch=bench", str(tree)],
                   check=True, capture_output=True)
    seconds = time.monotonic() - start
    remove_tree(tree)
    return seconds, time.monotonic() - commit_start


def ours(work: Path, repo_name: str, cache: Path) -> tuple[float, bool, str, dict[str, float]]:
    bp = parse_text(BLUEPRINT, "bench.toml")
    repo_path = work / repo_name
    if not (repo_path / "config").exists():
        Repo.init(repo_path, mode="archive")
    start = time.monotonic()
    res = compose(ComposeRequest(bp, repo_path, Sources.host(), profile="test",
                                 cache_root=cache))
    return time.monotonic() - start, res.tree_cached, res.root_tree, res.timings


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def gateway_incremental(work: Path) -> dict[str, tuple[float, str, dict[str, float]]]:
    """Issue 12: gateway v1 then v2 (+strace) with the edge profile from the Debian mirror —
    v2 built by apt in v1's cached tree — beside a clean v2 compose (empty cache)."""
    from atomicedge.compose.build import Steps
    from atomicedge.compose.validate import load
    out: dict[str, tuple[float, str, dict[str, float]]] = {}
    parent = "none"
    for label, name, cache, repo in (("v1", "gateway-v1.toml", "gw-cache", "gw-repo"),
                                     ("v2", "gateway-v2.toml", "gw-cache", "gw-repo"),
                                     ("v2-clean", "gateway-v2.toml", "gw-clean", "gw-repo2")):
        steps = Steps()
        start = time.monotonic()
        res = compose(ComposeRequest(load(EXAMPLES / name), work / repo, Sources.host(),
                                     parent=parent if label == "v2" else "none",
                                     cache_root=work / cache), steps)
        out[label] = (time.monotonic() - start, res.root_tree, res.timings)
        parent = res.commit
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-compose-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    try:
        bare, bare_commit = bare_pipeline(work)
        cold, cached, root1, steps = ours(work, "repo", cache)
        assert not cached
        warm_same, _, root2, _ = ours(work, "repo", cache)
        warm_fresh, cached2, root3, _ = ours(work, "repo2", cache)
        assert cached2 and root1 == root2 == root3
        gw = gateway_incremental(work)
    finally:
        if args.keep is None:
            remove_tree(work)
    print(f"bare pipeline (mmdebstrap + ostree commit): {bare:7.2f} s   "
          f"(ostree commit {bare_commit:.2f} s)")
    print(f"cold compose (atomicedge):                  {cold:7.2f} s   "
          f"ratio {cold / bare:.2f}x (target <= 1.10x)")
    print("  steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    print(f"warm recompose, same repo (input hash):     {warm_same:7.2f} s   (target <= 2 s)")
    print(f"warm recompose, fresh repo (tree cache):    {warm_fresh:7.2f} s")
    print(f"root tree identical across the three composes: {root1[:16]}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from composer_api import report, status_polls
    api_line = report(status_polls())
    (v1s, _, _), (v2s, v2root, v2steps), (cls, clroot, _) = gw["v1"], gw["v2"], gw["v2-clean"]
    print(f"gateway v1, clean compose (edge profile):   {v1s:7.2f} s")
    print(f"gateway v2 after v1 (incremental):          {v2s:7.2f} s   (target <= 15 s)")
    print("  steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in v2steps.items()))
    print(f"gateway v2, clean compose (empty cache):    {cls:7.2f} s")
    print(f"v2 root tree, incremental vs clean: {v2root[:16]} vs {clroot[:16]} "
          f"({'identical' if v2root == clroot else 'DIFFERENT'})")
    print(api_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
