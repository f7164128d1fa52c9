"""The device runtime as shipped: exactly the device closure, on the image's own python3.

A composed gateway image (tests/images.py) is checked out by the real ``ostree`` and the
closure runs inside it under bubblewrap with nothing of the host mounted but a scratch
directory: ``/usr/bin/atomicedge`` on Debian's python3 and Debian's python3-urllib3 1.26 /
python3-nacl / python3-rich installs a device over HTTP, reports its status, and upgrades it
through a static delta whose bsdiff part only the pure-Python bspatch can apply.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from atomicedge.compose import build, closure
from atomicedge.compose.validate import load
from atomicedge.delta.generate import generate
from atomicedge.ostree.checkout import checkout
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server
from tests.images import EXAMPLES, GatewayImages

SITE = "usr/lib/python3/dist-packages/atomicedge"
HOST_ONLY_DIRS = ("compose", "lab", "publish", "composer")


def test_device_code_never_imports_the_builder_publisher_or_lab() -> None:
    src = Path(closure.PACKAGE_DIR)
    pattern = r"^\s*(from|import)\s+atomicedge\.(compose|publish|lab|composer)\b"
    out = subprocess.run(["git", "grep", "-nE", pattern, "--", "device", "health", "workload"],
                         cwd=src, capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == "", out.stdout


def test_closure_holds_the_device_runtime_and_nothing_of_the_host_side() -> None:
    c = closure.compute()
    for needed in ("atomicedge.cli.device", "atomicedge.device.agent",
                   "atomicedge.health.service", "atomicedge.remote.pull",
                   "atomicedge.delta.apply", "atomicedge.delta.bsdiff"):
        assert needed in c.modules
    for m in c.modules:
        assert not any(m.startswith(f"atomicedge.{d}") for d in HOST_ONLY_DIRS), m
        assert m not in ("atomicedge.cli.demo", "atomicedge.cli.compose",
                         "atomicedge.delta.generate", "atomicedge.cli.repo_net"), m


def _copy_package(dest: Path) -> Path:
    pkg = dest / "atomicedge"
    shutil.copytree(closure.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def test_changing_any_closure_file_changes_the_compose_input_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bp = load(EXAMPLES / "gateway-v1.toml")
    before = build.input_hash("k", bp)
    pkg = _copy_package(tmp_path)
    monkeypatch.setattr(closure, "PACKAGE_DIR", pkg)
    assert build.input_hash("k", bp) == before  # same bytes, same hash
    for rel in ("device/agent.py", "delta/bsdiff.py", "device/units/atomicedge-agent.timer"):
        path = pkg / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert build.input_hash("k", bp) != before, rel
        path.write_bytes(original)
    assert build.input_hash("k", bp) == before


def test_a_device_import_of_host_code_is_refused_at_build_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _copy_package(tmp_path)
    agent = pkg / "device" / "agent.py"
    agent.write_text(agent.read_text() + "\nfrom atomicedge.compose import build  # noqa\n")
    monkeypatch.setattr(closure, "PACKAGE_DIR", pkg)
    with pytest.raises(Exception, match=r"atomicedge.device.agent:\d+ imports host-only"):
        closure.compute()


def _bwrap(root: Path, work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run in the image: its own /usr and /etc, only ``work`` from the host, host loopback."""
    cmd = ["bwrap", "--bind", str(root), "/", "--ro-bind", str(root / "usr/etc"), "/etc",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(work), "/work",
           "--unshare-pid", "--die-with-parent", "--clearenv",
           "--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the first use of the gateway images composes them (mmdebstrap)
def test_shipped_closure_installs_reports_and_applies_a_static_delta_on_debian_python(
        gateway_images: GatewayImages, tmp_path: Path) -> None:
    root = tmp_path / "image"
    subprocess.run(["ostree", f"--repo={gateway_images.repo}", "checkout", "-U",
                    gateway_images.v1, str(root)], check=True, capture_output=True)
    site = root / SITE
    assert (site / "device" / "agent.py").is_file()
    for d in HOST_ONLY_DIRS:
        assert not (site / d).exists(), d
    assert not (site / "cli" / "demo.py").exists()
    assert not (root / "usr/lib/atomicedge").exists()  # the old bind-mount points are gone
    assert list((site / "device" / "__pycache__").glob("agent.cpython-311.pyc"))

    # the server starts with v1 on its own ref
    served = Repo.init(tmp_path / "served", "archive")
    subprocess.run(["ostree", f"--repo={served.path}", "pull-local",
                    str(gateway_images.repo), gateway_images.v1], check=True)
    ref = gateway_images.ref
    served.set_ref(ref, gateway_images.v1)
    pubsum.update(served)
    work = tmp_path / "work"
    work.mkdir()
    with Server(served.path, quiet=True) as srv:
        r = _bwrap(root, work, "/usr/bin/atomicedge", "device", "install", "--sysroot",
                   "/work/sysroot", "--osname", "debian", "--url", srv.url, "--ref", ref)
        assert r.returncode == 0, r.stderr
        r = _bwrap(root, work, "/usr/bin/atomicedge", "device", "status", "--sysroot",
                   "/work/sysroot", "--json")
        assert r.returncode == 0, r.stderr
        deps = json.loads(r.stdout)["deployments"]
        assert [d["checksum"] for d in deps] == [gateway_images.v1]
        # v1' = v1 with python3's binary changed in one byte, published with a static delta
        tree = tmp_path / "v1b"
        checkout(Repo.open(gateway_images.repo), gateway_images.v1, tree)
        py = next((tree / "usr/bin").glob("python3.1?"))
        data = bytearray(py.read_bytes())
        data[len(data) // 2] ^= 0xFF
        py.write_bytes(bytes(data))
        v1b = commit_directory(served, tree, branch=ref, subject="v1 patched",
                               parent=gateway_images.v1)
        gen = generate(served, gateway_images.v1, v1b)
        assert gen.bsdiff >= 1
        pubsum.update(served)
        with urllib.request.urlopen(f"{srv.url}/stats") as resp:
            before = json.load(resp)
        r = _bwrap(root, work, "/usr/bin/atomicedge", "device", "upgrade", "--sysroot",
                   "/work/sysroot", "--os", "debian")
        assert r.returncode == 0, r.stdout + r.stderr
        with urllib.request.urlopen(f"{srv.url}/stats") as resp:
            after = json.load(resp)
    # python3's binary (MBs) arrived as a bsdiff in a small delta part, not as an object
    assert after["bytes"] - before["bytes"] < 400_000, (before, after)
    r = _bwrap(root, work, "/usr/bin/atomicedge", "device", "status", "--sysroot",
               "/work/sysroot", "--json")
    deps = json.loads(r.stdout)["deployments"]
    assert deps[0]["checksum"] == v1b
    deployed = next(d for d in (work / "sysroot/ostree/deploy/debian/deploy").glob(f"{v1b}.*")
                    if d.is_dir())
    assert (deployed / py.relative_to(tree)).read_bytes() == bytes(data)
