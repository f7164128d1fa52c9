"""Fixtures of the lab tests: a lab of this session, the composed gateway images served on the
lab network by ``atomicedge repo serve``, and a device installed from that server over HTTP.

Nothing is faked: real systemd-nspawn boots of the composed images, real network namespaces,
a real HTTP server; the only shortcut is the agent's timer intervals, provisioned short in the
device's ``/etc/atomicedge/agent.toml`` (what a kickstart's %post would do), so an update
cycle takes seconds instead of a day.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from atomicedge.lab.devices import Lab
from atomicedge.ostree.repo import Repo
from tests.lab.helpers import AGENT_TOML, ATOMICEDGE, PORT, Served, remove_sysroot, wait_for


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.open(tmp_path_factory.mktemp("lab") / "lab")
    yield lab
    lab.down_all()


@pytest.fixture(scope="session")
def served(lab: Lab, gateway_images: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The composed repository (hard-linked copy, v1 published) served on the lab network."""
    path = tmp_path_factory.mktemp("served") / "repo"
    subprocess.run(["cp", "-al", str(gateway_images.repo), str(path)], check=True)
    repo = Repo.open(path)
    url = f"http://{lab.net.host_ip}:{PORT}"
    with open(path.parent / "serve.log", "wb") as log:
        proc = subprocess.Popen([ATOMICEDGE, "lab", "--lab-dir", str(lab.path), "host", "--",
                                 ATOMICEDGE, "repo", "serve", "--repo", str(path),
                                 "--bind", lab.net.host_ip, "--port", str(PORT)],
                                stdout=log, stderr=subprocess.STDOUT)
    srv = Served(lab, repo, gateway_images.ref, url, proc)
    srv.publish(gateway_images.v1)

    def up() -> bool:
        try:
            return "files" in srv.stats()
        except OSError:
            return proc.poll() is not None  # died: fail below instead of waiting
    try:
        wait_for("repo serve on the lab network", up, timeout=60, every=0.2)
        assert proc.poll() is None, (path.parent / "serve.log").read_text()
        yield srv
    finally:
        proc.terminate()  # `lab host` exec'd the server: this PID is the server's
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def installed(lab: Lab, served: Served, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, Any]]:
    """``device install`` from the served repo over HTTP (run on the lab network), then the
    agent's configuration provisioned in the deployment's /etc."""
    sysroot = tmp_path_factory.mktemp("installed") / "sysroot"
    before = served.stats()
    proc = subprocess.run([ATOMICEDGE, "lab", "--lab-dir", str(lab.path), "host", "--",
                           ATOMICEDGE, "device", "install", "--sysroot", str(sysroot),
                           "--osname", "edge", "--url", served.url, "--ref", served.ref],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    after = served.stats()
    (deployment,) = (sysroot / "ostree/deploy/edge/deploy").glob("*.0")
    (deployment / "etc/atomicedge/agent.toml").write_text(AGENT_TOML)
    yield {"sysroot": sysroot, "files": after["files"] - before["files"],
           "bytes": after["bytes"] - before["bytes"]}
    remove_sysroot(sysroot)
