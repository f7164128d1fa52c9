"""Fixtures for the store tests: the real ``ostree`` as judge, and trees with every oddity."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

OSTREE = shutil.which("ostree")


def ostree(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if OSTREE is None:
        pytest.skip("the real ostree binary is not installed (make setup installs it)")
    return subprocess.run([OSTREE, *args], capture_output=True, text=True, check=check)


def make_rich_tree(root: Path, variant: int = 0) -> Path:
    """Nested dirs, empty and large files, symlinks, odd modes, setuid, uid/gid, xattrs."""
    (root / "usr/lib/deep/er/still").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "empty-dir").mkdir()
    (root / "etc/hostname").write_text(f"edge-{variant}\n")
    (root / "etc/empty").write_bytes(b"")
    (root / "usr/lib/deep/er/still/leaf.txt").write_text("leaf\n" * 10)
    # random, not periodic: in periodic data a flipped deflate distance can decode identically
    (root / "usr/lib/big.bin").write_bytes(os.urandom(3 * 1024 * 1024) + b"tail")
    (root / "usr/bin").mkdir()
    su = root / "usr/bin/su"
    su.write_bytes(b"#!/bin/sh\necho su\n")
    su.chmod(0o4755)
    odd = root / "usr/lib/odd"
    odd.write_text("odd modes\n")
    odd.chmod(0o2640)
    owned = root / "usr/lib/owned"
    owned.write_text("not root\n")
    os.chown(owned, 1234, 5678)
    os.symlink("../lib/deep/er/still/leaf.txt", root / "usr/bin/leaf-link")
    os.symlink("/nonexistent/absolute", root / "etc/dangling")
    os.symlink("er", root / "usr/lib/deep/dirlink")
    os.setxattr(root / "etc/hostname", "user.origin", b"blueprint")
    os.setxattr(root / "usr/lib/deep", "user.dirattr", b"D")
    os.setxattr(root / "usr/lib/owned", "user.a", b"1")
    os.setxattr(root / "usr/lib/owned", "user.b", b"\x00\xff")
    sticky = root / "tmpdir"
    sticky.mkdir()
    sticky.chmod(0o1777)
    private = root / "private"
    private.mkdir()
    (private / "secret").write_text("s\n")
    private.chmod(0o700)
    return root


def manifest(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a checkout must reproduce, per path (mtimes excluded: ostree zeroes them)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            p = Path(dirpath) / name if name else Path(dirpath)
            rel = "/" + str(p.relative_to(root)) if p != root else "/"
            st = os.lstat(p)
            xattrs = tuple(sorted((n, os.getxattr(p, n, follow_symlinks=False))
                                  for n in os.listxattr(p, follow_symlinks=False)))
            if os.path.islink(p):
                body: object = ("link", os.readlink(p))
            elif p.is_dir():
                body = ("dir",)
            else:
                body = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, body, xattrs)
    return out


@pytest.fixture
def rich_tree(tmp_path: Path) -> Callable[[int], Path]:
    def make(variant: int = 0) -> Path:
        return make_rich_tree(tmp_path / f"tree{variant}", variant)
    return make
