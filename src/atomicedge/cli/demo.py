"""``atomicedge demo``: the seed demo, end to end, on an embedded default.

Acts, each a library call of its subsystem: (1) the store commits a sample tree and the real
``ostree fsck`` judges it; (2) the image builder composes the gateway blueprint v1 and v2;
(3) the repo is served, pulled with a live progress bar, updated through a static delta;
(4) a device is installed, boots, takes a bad update, rolls back by itself after three
failed boots, then takes the good one. Any act that fails stops the demo with exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

from atomicedge.errors import ToolError
from atomicedge.store import inspect as ins
from atomicedge.store.commit import commit_directory
from atomicedge.store.fsck import fsck
from atomicedge.store.gvariant import Variant
from atomicedge.store.repo import Repo

console = Console(soft_wrap=True)
DEVICE_REF = "debian/12/x86_64/edge-lab"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the seed demo end to end")
    p.add_argument("--workdir", default="demo-work", help="scratch directory (recreated)")
    p.add_argument("--only", choices=["store", "compose", "net", "device"], action="append",
                   help="run only these acts")
    p.set_defaults(func=cmd_demo)


def sample_tree(root: Path, version: str) -> Path:
    """A tiny OS-shaped tree, enough to show commits, diffs and checkouts."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(
        f'NAME="atomicedge demo"\nID=debian\nVERSION_ID="{version}"\n'
        f'PRETTY_NAME="atomicedge demo {version}"\n')
    hello = root / "usr/bin/hello-edge"
    hello.write_text(f"#!/bin/sh\necho 'hello from edge image {version}'\n")
    hello.chmod(0o755)
    (root / "usr/etc/motd").write_text(f"Welcome to the edge (v{version})\n")
    if version != "1":
        (root / "usr/etc/edge-feature.conf").write_text("feature=on\n")
    return root


def act_store(work: Path) -> dict[str, Any]:
    console.print(Rule("Act 1 — the OSTree-format store"))
    repo = Repo.init(work / "repo", "archive")
    ref = "debian/12/x86_64/edge"
    commits = []
    for version in ("1", "2"):
        tree = sample_tree(work / f"sample-v{version}", version)
        csum = commit_directory(repo, tree, branch=ref, subject=f"sample v{version}",
                                metadata={"version": Variant("s", f"{version}.0")})
        commits.append(csum)
        console.print(f"committed v{version}: [bold]{csum}[/]")
    console.print("\n[bold]atomicedge repo log[/]")
    for csum, commit in ins.history(repo, ref):
        console.print(ins.format_commit(csum, commit), markup=False, highlight=False)
    console.print("[bold]atomicedge repo diff v1 v2[/]")
    console.print(ins.diff(repo, commits[0], commits[1]).render(), markup=False)
    _summary(repo)
    report = fsck(repo)
    console.print(f"atomicedge fsck: {report.objects} objects, ok={report.ok}")
    judge = subprocess.run(["ostree", f"--repo={repo.path}", "fsck"], capture_output=True,
                           text=True)
    console.print(f"real ostree fsck: {judge.stdout.strip().splitlines()[-1]}")
    if judge.returncode != 0 or not report.ok:
        raise ToolError("the demo repository failed fsck", stderr=judge.stderr)
    return {"repo": repo.path, "ref": ref, "commits": commits}


def _summary(repo: Repo) -> None:
    try:
        summary = importlib.import_module("atomicedge.store.summary")
    except ModuleNotFoundError:
        return
    summary.update(repo)
    console.print("[bold]atomicedge repo summary --view[/]")
    console.print(summary.view(summary.load(repo)), markup=False, highlight=False)


def _external_act(title: str, module: str, call: Callable[[Any], dict[str, Any]],
                  workdir: Path) -> dict[str, Any]:
    console.print(Rule(title))
    workdir.mkdir(parents=True, exist_ok=True)
    mod = importlib.import_module(module)
    return call(mod)


def cmd_demo(args: argparse.Namespace) -> int:
    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    acts = args.only or ["store", "compose", "net", "device"]
    t0 = time.monotonic()
    results: dict[str, Any] = {}
    if "store" in acts:
        results["store"] = act_store(work / "store")
    if "compose" in acts:
        results["compose"] = _external_act(
            "Act 2 — build images from a blueprint", "atomicedge.compose.demo",
            lambda m: m.run(work / "compose", console), work / "compose")
    source = results.get("compose") or results.get("store") or {}
    if "net" in acts and source:
        results["net"] = _external_act(
            "Act 3 — serve, pull, update with a static delta", "atomicedge.store.netdemo",
            lambda m: m.run(work / "net", Path(source["repo"]), source["ref"], console),
            work / "net")
    if "device" in acts and source:
        results["device"] = _external_act(
            "Act 4 — a device: update, three failed boots, automatic rollback",
            "atomicedge.device.demo",
            # the lab image (systemd + the seed's health check) gets a ref of its own, so the
            # composed gateway history above stays as the earlier acts left it
            lambda m: m.run(work / "device", Path(source["repo"]), DEVICE_REF, console),
            work / "device")
    console.print(Rule(f"demo finished in {time.monotonic() - t0:.1f} s"))
    return 0
