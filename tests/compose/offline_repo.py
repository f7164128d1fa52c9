"""Build the local apt repository the offline compose tests use (real .debs, no network).

Content: the Debian minbase package set, downloaded once from the machine's mirror into the
cache (keyed by the mirror's Release hashes), plus tiny packages built here with dpkg-deb:
``edge-hello`` (a script + a systemd unit with an [Install] section), ``edge-agent`` (depends on
edge-hello) and ``edge-test-kernel`` (a stub /boot/vmlinuz + initrd so the test profile stays
deployable). Indexed with apt-ftparchive; Release is written outside the directory first and
says Suite/Codename bookworm (the two gotchas of the machine notes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from atomicedge.compose.apt import AptState, Sources
from atomicedge.compose.cache import default_root

KVER = "6.1.0-atomicedge-test"


def _deb(work: Path, out: Path, name: str, version: str, files: dict[str, tuple[str, int]],
         depends: str = "") -> None:
    root = work / f"{name}-{version}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "DEBIAN").mkdir(parents=True)
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
               f"Maintainer: atomicedge tests <tests@example.invalid>\n"
               + (f"Depends: {depends}\n" if depends else "")
               + f"Description: atomicedge test package {name}\n")
    (root / "DEBIAN/control").write_text(control)
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        os.chmod(path, mode)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root),
                    str(out / f"{name}_{version}_all.deb")], check=True, capture_output=True)


def build_test_debs(work: Path, out: Path) -> None:
    unit = ("[Unit]\nDescription=edge hello\n[Service]\nExecStart=/usr/bin/edge-hello\n"
            "[Install]\nWantedBy=multi-user.target\n")
    _deb(work, out, "edge-hello", "1.0", {
        "usr/bin/edge-hello": ("#!/bin/sh\necho hello from the edge\n", 0o755),
        "lib/systemd/system/edge-hello.service": (unit, 0o644)})
    _deb(work, out, "edge-agent", "1.0", {
        "usr/bin/edge-agent": ("#!/bin/sh\nedge-hello\n", 0o755)}, depends="edge-hello")
    _deb(work, out, "edge-test-kernel", "1.0", {
        f"boot/vmlinuz-{KVER}": ("stub kernel\n", 0o644),
        f"boot/initrd.img-{KVER}": ("stub initramfs\n", 0o644)})


def minbase_debs() -> Path:
    """The minbase .debs from the machine's mirror, downloaded once (cached by Release hash)."""
    state = AptState(Sources.host(), default_root(), "amd64")
    state.update()
    key = hashlib.sha256(repr(sorted(state.release_hashes().items())).encode()).hexdigest()[:16]
    dest = default_root() / "minbase-debs" / key
    if (dest / ".complete").exists():
        return dest
    subprocess.run(["apt-get", "-q", "-y", "-d", "install", *state.options(),
                    "?essential", "?priority(required)", "apt"], check=True, capture_output=True)
    tmp = dest.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in (state.dir / "cache/archives").glob("*.deb"):
        shutil.copy2(deb, tmp / deb.name)
    (tmp / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest


def build_repo(dest: Path) -> Path:
    """A flat repo at ``dest``: cached minbase debs (hard links) + the test debs."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in minbase_debs().glob("*.deb"):
        target = dest / deb.name
        if not target.exists():
            os.link(deb, target)
    build_test_debs(dest.parent / "debsrc", dest)
    return index_repo(dest)


def index_repo(dest: Path) -> Path:
    """Packages + Release (Suite/Codename bookworm, written outside ``dest`` first)."""
    with open(dest / "Packages", "w") as fh:
        subprocess.run(["apt-ftparchive", "packages", "."], cwd=dest, stdout=fh, check=True)
    release = dest.parent / f".Release.tmp-{dest.name}"
    with open(release, "w") as fh:
        subprocess.run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=bookworm",
                        "-o", "APT::FTPArchive::Release::Codename=bookworm", "release", "."],
                       cwd=dest, stdout=fh, check=True)
    os.replace(release, dest / "Release")
    return dest
