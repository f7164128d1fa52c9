"""Demo act 1: the store commits a sample tree twice; the real ``ostree fsck`` judges it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console

from atomicedge.errors import ToolError
from atomicedge.ostree import inspect as ins
from atomicedge.ostree import summary
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum


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


def run(work: Path, console: Console) -> dict[str, Any]:
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
    _summary(repo, console)
    report = fsck(repo)
    console.print(f"atomicedge fsck: {report.objects} objects, ok={report.ok}")
    judge = subprocess.run(["ostree", f"--repo={repo.path}", "fsck"], capture_output=True,
                           text=True)
    console.print(f"real ostree fsck: {judge.stdout.strip().splitlines()[-1]}")
    if judge.returncode != 0 or not report.ok:
        raise ToolError("the demo repository failed fsck", stderr=judge.stderr)
    return {"repo": repo.path, "ref": ref, "commits": commits}


def _summary(repo: Repo, console: Console) -> None:
    pubsum.update(repo)
    console.print("[bold]atomicedge repo summary --view[/]")
    console.print(summary.view(summary.load(repo)), markup=False, highlight=False)
