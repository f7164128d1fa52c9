"""The two-device app lab of the workload tests: ``examples/gateway-apps.toml`` composed once per
session, installed twice with different provisioning (``device install --provision``: edge1
primary, edge2 backup, one VIP), both booted on one lab network and shared by every test.

Nothing is faked: real nspawn boots of the composed image, keepalived's VRRP between the
devices' network namespaces, rootless podman under core's user manager, systemd's socket
activation. Tests that change the lab (crash a device, change the advert interval) put it back.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, compose
from atomicedge.compose.validate import load
from atomicedge.lab import demo_apps
from atomicedge.lab.devices import Lab
from tests.lab.helpers import remove_sysroot

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
REF = "debian/12/x86_64/apps"
_LOCK = Path(tempfile.gettempdir()) / "atomicedge-test-images.lock"


def compose_apps(repo: Path) -> str:
    """Compose the apps gateway (a lock keeps concurrent sessions off the same cache entry)."""
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            res = compose(ComposeRequest(blueprint=load(EXAMPLES / "gateway-apps.toml"),
                                         repo=repo, sources=Sources.host(), ref=REF))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.utime(_LOCK)
    return res.commit


@pytest.fixture(scope="session")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo_apps.AppLab]:
    work = tmp_path_factory.mktemp("apps")
    compose_apps(work / "repo")
    lab = Lab.open(work / "lab")
    try:
        app_lab = demo_apps.build(lab, work, work / "repo", REF)
        yield app_lab
    finally:
        demo_apps.cleanup(lab)
        for sysroot in work.glob("*-sysroot"):
            remove_sysroot(sysroot)
