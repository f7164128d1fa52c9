"""Helpers of the lab tests: polling, the served repository, sysroot copies."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge.errors import ToolError
from atomicedge.lab.demo_apps import poll
from atomicedge.lab.devices import Lab
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum

ATOMICEDGE = str(Path(sys.executable).with_name("atomicedge"))
PORT = 8480
# every 5 s: look for, download and stage an update; every 5 s: reboot into a staged one
AGENT_TOML = """policy = "stage"
schedule = "*:*:0/5"
splay = "0"

[apply]
schedule = "*:*:0/5"
"""


def wait_for(what: str, cond: Any, timeout: float = 240.0, every: float = 0.5) -> Any:
    """:func:`atomicedge.lab.demo_apps.poll` with the tests' defaults; a timeout fails the test."""
    try:
        return poll(what, cond, timeout, every)
    except ToolError as e:
        raise AssertionError(str(e)) from None


@dataclass
class Served:
    """A repository published by ``atomicedge repo serve`` on the lab's host side."""

    lab: Lab
    repo: Repo
    ref: str
    url: str
    proc: subprocess.Popen[bytes]

    def publish(self, commit: str) -> None:
        self.repo.set_ref(self.ref, commit)
        pubsum.update(self.repo)

    def stats(self) -> dict[str, Any]:
        def get() -> dict[str, Any]:
            with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        return self.lab.in_host(get)


def copy_sysroot(src: Path, dest: Path) -> Path:
    """Another disk with the same install (hard links, owners, modes and xattrs kept)."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def remove_sysroot(path: Path) -> None:
    """Make a sysroot removable: deployment roots are immutable (``chattr +i``, as ostree
    marks them). The files themselves go with pytest's temporary directories."""
    for d in path.glob("ostree/deploy/*/deploy/*"):
        if d.is_dir():
            subprocess.run(["chattr", "-i", str(d)], capture_output=True)
