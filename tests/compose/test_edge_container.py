"""edge-container: the OCI archive a compose writes is read by skopeo, runs under podman and
serves the commit to a real ``ostree pull``, and goes straight to a registry with ``--push``.

Offline compose (the local apt repo + Debian's busybox-static .deb, the container's server) with
the test profile; podman per the machine notes (runc, explicit ulimits, --root/--runroot in a
temp dir) with the container in a network namespace made here; the registry is Debian's
docker-registry on 127.0.0.1 with a temporary config, stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atomicedge.compose.apt import AptState, Sources
from atomicedge.compose.cache import default_root
from atomicedge.compose.mmdebstrap import unmount_below
from atomicedge.lab.registry import Registry
from tests.compose import offline_repo

REF = "debian/12/x86_64/edge"
BLUEPRINT = '''
name = "gateway"
version = "1.0.0"
[[packages]]
name = "edge-hello"
[customizations]
hostname = "gw-container"
[customizations.kernel]
name = "edge-test-kernel"
'''
PODMAN_FLAGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    assert proc.returncode == 0, f"{argv[:3]}: {proc.stderr[-2000:]}"
    return proc


def _atomicedge(args: list[str], env: dict[str, str], *,
                offline: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "atomicedge.cli.main", *args]
    if offline:
        argv = ["unshare", "-n", *argv]   # no network at all: only the file:// repo
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def server_repo(apt_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline repo + busybox-static (downloaded once from the machine's Debian mirror)."""
    work = tmp_path_factory.mktemp("container-repo")
    repo = work / "repo"
    repo.mkdir()
    for deb in apt_repo.glob("*.deb"):
        os.link(deb, repo / deb.name)
    host = AptState(Sources.host(), default_root(), "amd64")
    host.update()
    _run(["apt-get", "-q", "download", *host.options(), "busybox-static"], cwd=repo)
    return offline_repo.index_repo(repo)


@dataclass
class Built:
    work: Path
    image: Path
    commit: str
    env: dict[str, str]
    blueprint: Path
    repo_dir: Path


@pytest.fixture(scope="module")
def built(server_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("edge-container")
    (work / "gateway.toml").write_text(BLUEPRINT)
    env = dict(os.environ, ATOMICEDGE_CACHE=str(work / "cache"))
    proc = _atomicedge(["compose", "build", str(work / "gateway.toml"), "--type",
                        "edge-container", "--repo", str(work / "repo"), "--output",
                        str(work / "gateway.tar"), "--offline-repo", str(server_repo),
                        "--profile", "test"], env)
    assert proc.returncode == 0, proc.stderr
    commit = proc.stdout.split()[1]
    yield Built(work, work / "gateway.tar", commit, env, work / "gateway.toml", server_repo)
    unmount_below(work)


def test_skopeo_reads_the_oci_archive(built: Built) -> None:
    info = json.loads(_run(["skopeo", "inspect", f"oci-archive:{built.image}"]).stdout)
    assert info["Labels"]["com.atomicedge.ostree.commit"] == built.commit
    assert info["Labels"]["org.opencontainers.image.version"] == "1.0.0"
    assert len(info["Layers"]) == 2
    config = json.loads(_run(["skopeo", "inspect", "--config",
                              f"oci-archive:{built.image}"]).stdout)["config"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Cmd"][:2] == ["/bin/busybox", "httpd"] and "8080" in config["Cmd"]
    assert config["User"] == "65534:65534"


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ae-ctr-{uuid.uuid4().hex[:8]}"
    _run(["ip", "netns", "add", name])
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _poll(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_podman_runs_it_and_a_real_ostree_pull_from_it_succeeds(built: Built, netns: str,
                                                                 tmp_path: Path) -> None:
    runroot = Path(tempfile.mkdtemp(prefix="ae-podman-", dir="/tmp"))  # podman: <= 50 chars
    store = ["--root", str(tmp_path / "root"), "--runroot", str(runroot)]
    podman = ["podman", *store, *PODMAN_FLAGS]
    inns = ["nsenter", f"--net=/run/netns/{netns}"]
    loaded = _run([*podman, "load", "-i", str(built.image)]).stdout
    assert "localhost/gateway:1.0.0" in loaded
    name = f"ae-ctr-{uuid.uuid4().hex[:8]}"
    try:
        # --network host = the namespace nsenter put podman in (made by this test, loopback only)
        _run([*inns, *podman, "run", "-d", "--name", name, "--network", "host",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
              "localhost/gateway:1.0.0"])
        _poll("the container's httpd", lambda: subprocess.run(
            [*inns, "curl", "-sf", "http://127.0.0.1:8080/repo/config"],
            capture_output=True, check=False).returncode == 0)
        client = tmp_path / "client"
        _run(["ostree", f"--repo={client}", "init", "--mode=archive"])
        _run(["ostree", f"--repo={client}", "remote", "add", "--no-gpg-verify", "edge",
              "http://127.0.0.1:8080/repo/"])
        _run([*inns, "ostree", f"--repo={client}", "pull", "edge", REF])
        _run(["ostree", f"--repo={client}", "fsck"])
        got = _run(["ostree", f"--repo={client}", "rev-parse", f"edge:{REF}"]).stdout.strip()
        assert got == built.commit
        listing = _run(["ostree", f"--repo={client}", "ls", got, "/usr/bin/edge-hello"]).stdout
        assert "/usr/bin/edge-hello" in listing
        meta = _run([*inns, "curl", "-sf", "http://127.0.0.1:8080/compose.json"]).stdout
        assert json.loads(meta)["ostree-commit"] == built.commit
        assert "nobody" in _run([*podman, "top", name, "user"]).stdout   # not root
    finally:
        subprocess.run([*podman, "rm", "-f", name], capture_output=True, check=False)
        subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True, check=False)
        unmount_below(tmp_path)
        unmount_below(runroot)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """docker-registry on 127.0.0.1:<free port>, temp storage; yields HOST:PORT."""
    with Registry.start(tmp_path / "registry", "127.0.0.1") as reg:
        yield reg.host


def test_push_goes_straight_to_a_registry_that_skopeo_reads_back(built: Built,
                                                                  registry: str) -> None:
    dest = f"docker://{registry}/edge/gateway:1.0.0"
    # same blueprint, same repo: the commit reuses the tree; this time pushed, no --output
    proc = _atomicedge(["compose", "build", str(built.blueprint), "--type", "edge-container",
                        "--repo", str(built.work / "repo"), "--offline-repo",
                        str(built.repo_dir), "--profile", "test", "--push", dest,
                        "--tls-verify=false"], built.env, offline=False)
    assert proc.returncode == 0, proc.stderr
    assert f"pushed {dest}" in proc.stdout
    remote = json.loads(_run(["skopeo", "inspect", "--tls-verify=false", dest]).stdout)
    assert remote["Labels"]["com.atomicedge.ostree.ref"] == REF
    commit = remote["Labels"]["com.atomicedge.ostree.commit"]
    assert commit == proc.stdout.split()[1]
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=10) as resp:
        assert json.load(resp)["repositories"] == ["edge/gateway"]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--type", "edge-container", "--push", "http://127.0.0.1:5000/x"], "--push"),
    (["--push", "docker://127.0.0.1:5000/edge/gw:1"], "--type edge-container"),
])
def test_bad_push_is_refused_before_anything_is_built(built: Built, tmp_path: Path,
                                                      extra: list[str], needle: str) -> None:
    proc = _atomicedge(["compose", "build", str(built.blueprint), "--repo",
                        str(tmp_path / "repo"), "--offline-repo", str(built.repo_dir),
                        "--profile", "test", *extra], built.env)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "repo").exists()
