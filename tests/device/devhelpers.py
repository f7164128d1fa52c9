"""Helpers for the device tests: tiny trees/commits and status comparison with real ostree."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.repo import Repo


def tiny_tree(path: Path, version: str, *, kernel: str = "kernel-1") -> Path:
    """A minimal bootable-looking tree (kernel + os-release + usr/etc)."""
    (path / "usr/etc").mkdir(parents=True)
    mod = path / "usr/lib/modules/6.1.0-test"
    mod.mkdir(parents=True)
    (mod / "vmlinuz").write_text(kernel)
    (mod / "initramfs.img").write_text("initramfs")
    (path / "usr/lib/os-release").write_text('PRETTY_NAME="Test OS"\nID=testos\n')
    (path / "usr/etc/hostname").write_text("default\n")
    (path / "usr/etc/release").write_text(f"{version}\n")
    (path / "usr/etc/app.conf").write_text("app=1\n")
    (path / "usr/etc/motd").write_text("welcome\n")
    (path / "usr/etc/sub").mkdir()
    (path / "usr/etc/sub/a.conf").write_text("a\n")
    (path / "usr/bin").mkdir()
    (path / "usr/bin/tool").write_text(f"#!/bin/sh\necho {version}\n")
    os.chmod(path / "usr/bin/tool", 0o755)
    (path / "var").mkdir()
    return path


def commit_tiny(repo: Repo, workdir: Path, version: str, ref: str = "testos/stable",
                **kw: str) -> str:
    tree = tiny_tree(workdir / f"tiny-{version}", version, **kw)
    return commit_directory(repo, tree, branch=ref, subject=f"v{version}",
                            metadata={"version": Variant("s", version)})




def ostree_status_ids(sysroot: Path) -> list[str]:
    """Deployments as real ``ostree admin status`` lists them: ['os csum.serial', ...]."""
    out = subprocess.run(["ostree", "admin", f"--sysroot={sysroot}", "status"],
                         capture_output=True, text=True, check=True).stdout
    ids = []
    for line in out.splitlines():
        parts = line.replace("*", " ").split()
        if len(parts) >= 2 and "." in parts[1] and len(parts[1].split(".")[0]) == 64:
            ids.append(f"{parts[0]}-{parts[1]}")
    return ids


def our_status_ids(sysroot: Path) -> list[str]:
    import contextlib
    import io

    from atomicedge.cli.main import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["device", "status", "--json", "--sysroot", str(sysroot)]) == 0
    return [d["id"] for d in json.loads(buf.getvalue())["deployments"] if not d["staged"]]
