"""The two-device app lab of the workload tests: ``examples/gateway-apps.toml`` composed once per
session, installed twice with different provisioning (``device install --provision``: edge1
primary, edge2 backup, one VIP), both booted on one lab network and shared by every test.

Nothing is faked: real nspawn boots of the composed image, keepalived's VRRP between the
devices' network namespaces, rootless podman under core's user manager, systemd's socket
activation, a real docker-registry (on the build host's loopback for the compose, which embeds
app v1; on the lab network for the tests that want it: ``apps.start_registry()``, stopped
again by the test). Tests that change the lab (crash a device, change the advert interval, move
the app to another image) put it back.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.lab import demo_apps
from atomicedge.lab.devices import Lab
from tests.lab.helpers import remove_sysroot

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
REF = demo_apps.REF
_LOCK = Path(tempfile.gettempdir()) / "atomicedge-test-images.lock"


def compose_apps(repo: Path, storage: Path | None = None) -> str:
    """Compose the apps gateway (a lock keeps concurrent sessions off the same cache entry)
    with app v1 from a registry whose storage (``storage``, default beside ``repo``) then
    holds v1, v2, v3 (broken) and prod (= v1)."""
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            res = demo_apps.compose_apps(repo, storage or repo.parent / "registry", EXAMPLES)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.utime(_LOCK)
    return res.commit


@pytest.fixture(scope="session")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo_apps.AppLab]:
    work = tmp_path_factory.mktemp("apps")
    compose_apps(work / "repo", work / "registry")
    lab = Lab.open(work / "lab")
    try:
        app_lab = demo_apps.build(lab, work, work / "repo", REF,
                                  registry_storage=work / "registry")
        yield app_lab
    finally:
        demo_apps.cleanup(lab)
        for sysroot in work.glob("*-sysroot"):
            remove_sysroot(sysroot)
