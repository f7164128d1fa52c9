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
    """Deployments as real ``ostree admin status`` lists them, with their markers."""
    out = subprocess.run(["ostree", "admin", f"--sysroot={sysroot}", "status"],
                         capture_output=True, text=True, check=True).stdout
    return parse_ostree_status(out)


def status_id(dep_id: str, *, booted: bool, pinned: bool, staged: bool) -> str:
    """``os-csum.serial`` plus the markers both status outputs must agree on."""
    marks = [m for m, on in (("booted", booted), ("pinned", pinned), ("staged", staged)) if on]
    return " ".join([dep_id, *marks])


def parse_ostree_status(out: str) -> list[str]:
    """``ostree admin status`` text -> ['os-csum.serial booted pinned staged', ...].

    A deployment line is ``[* ]OS CSUM.SERIAL [(staged|pending|rollback)]``; ``*`` marks the
    booted one; ``Pinned: yes`` (2022.7; older versions print ``(pinned)``) follows it."""
    entries: list[dict[str, object]] = []
    for line in out.splitlines():
        parts = line.replace("*", " ", 1).split() if line.startswith("*") else line.split()
        if (not line.startswith("    ") and len(parts) >= 2 and "." in parts[1]
                and len(parts[1].split(".")[0]) == 64):
            entries.append({"id": f"{parts[0]}-{parts[1]}", "booted": line.startswith("*"),
                            "staged": "(staged)" in line, "pinned": "(pinned)" in line})
        elif entries and line.strip().lower() == "pinned: yes":
            entries[-1]["pinned"] = True
    return [status_id(str(e["id"]), booted=bool(e["booted"]), pinned=bool(e["pinned"]),
                      staged=bool(e["staged"])) for e in entries]


def parse_our_status(json_text: str) -> list[str]:
    """``atomicedge device status --json`` -> the same form as :func:`parse_ostree_status`."""
    return [status_id(d["id"], booted=d["booted"], pinned=bool(d["pinned"]),
                      staged=d["staged"]) for d in json.loads(json_text)["deployments"]]


def our_status_ids(sysroot: Path) -> list[str]:
    import contextlib
    import io

    from atomicedge.cli.main import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["device", "status", "--json", "--sysroot", str(sysroot)]) == 0
    return parse_our_status(buf.getvalue())
