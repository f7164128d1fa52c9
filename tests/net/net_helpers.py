"""Helpers for the network tests: running ostree, building small trees."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run(*cmd: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check)


def ostree_fsck(repo: Path) -> str:
    out = run("ostree", "fsck", f"--repo={repo}", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def make_tree(root: Path, version: int = 1) -> Path:
    """A small tree with the kinds of entries ostree cares about; ``version`` changes it."""
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    (root / "etc/os-release").write_text(f"VERSION={version}\n")
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    big = bytearray(os.urandom(8) * 40000)  # compressible, 320 KB
    big[1000:1010] = bytes([version] * 10)
    (root / "usr/lib/libbig.so").write_bytes(bytes(big) if version == 1 else
                                              _mutate(root, bytes(big)))
    (root / "usr/lib/blob.bin").write_bytes(os.urandom(70000))
    (root / "usr/lib/empty").write_bytes(b"")
    if not (root / "usr/lib/link").is_symlink():
        os.symlink("libbig.so", root / "usr/lib/link")
    for i in range(30):
        (root / f"usr/lib/small{i}.txt").write_text(f"file {i} v{version if i < 3 else 1}\n")
    return root


def _mutate(root: Path, data: bytes) -> bytes:
    prev = root / "usr/lib/libbig.so"
    if prev.exists():
        old = bytearray(prev.read_bytes())
        old[5000:5100] = os.urandom(100)
        return bytes(old)
    return data




class StaticServer:
    """A plain static HTTP server (``python3 -m http.server``) as a stand-in for nginx."""

    def __init__(self, root: Path) -> None:
        import socket
        import sys
        import time
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("static server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> StaticServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ostree_client(path: Path, url: str, *extra: str) -> Path:
    """A bare-user repo made by the real ostree with remote ``origin`` -> ``url``."""
    run("ostree", "init", f"--repo={path}", "--mode=bare-user")
    run("ostree", f"--repo={path}", "remote", "add", *extra, "origin", url)
    return path


def ostree_commit(repo: Path, tree: Path, *extra: str) -> str:
    run("ostree", f"--repo={repo}", "commit", "-b", "main", "--generate-sizes", *extra,
        str(tree))
    return run("ostree", f"--repo={repo}", "rev-parse", "main").stdout.strip()


def stop_gpg_agent(home: Path) -> None:
    """gpg starts an agent per home; the tests must not leave daemons behind."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False,
                   capture_output=True)
