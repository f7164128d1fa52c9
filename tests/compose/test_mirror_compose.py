"""With the real Debian mirror: the example gateway blueprint (the Image Builder demo's RFE.toml
adapted to Debian) -> bootable edge commit; real ``ostree checkout``; ``repo packages`` lists the
extra package; v2 adding strace, chained with --parent, shows strace in ``--diff``.

Cold, this installs ~230 packages with a kernel and builds the initramfs (minutes on 2 cores);
the package tree is cached by content address, so later runs take seconds.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from atomicedge.compose.apt import AptState, Sources, host_arch
from atomicedge.compose.build import ComposeRequest, prefetch
from atomicedge.compose.cache import default_root
from atomicedge.compose.validate import load
from atomicedge.ostree.repo import Repo

EXAMPLES = Path(__file__).parents[2] / "examples"
pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "atomicedge.cli.main", *args],
                          capture_output=True, text=True, check=False, timeout=1500)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    work = tmp_path_factory.mktemp("mirror")
    repo = work / "repo"
    # warm v2's package tree in parallel with v1 (2 cores: the two initramfs builds overlap)
    v2_req = ComposeRequest(load(EXAMPLES / "gateway-v2.toml"), repo, Sources.host())
    AptState(Sources.host(), default_root(), host_arch()).update()
    with ThreadPoolExecutor(1) as pool:
        warm = pool.submit(prefetch, v2_req, update=False)
        v1 = _run("compose", "build", str(EXAMPLES / "gateway-v1.toml"), "--repo", str(repo))
        warm.result()
    c1 = v1.stdout.split()[1]
    v2 = _run("compose", "build", str(EXAMPLES / "gateway-v2.toml"), "--repo", str(repo),
              "--parent", c1)
    c2 = v2.stdout.split()[1]
    co = work / "co"
    subprocess.run(["ostree", f"--repo={repo}", "checkout", c1, str(co)], check=True)
    return {"repo": repo, "v1": c1, "v2": c2, "co": co}


def _meta(repo: Path, commit: str, key: str) -> str:
    return subprocess.run(["ostree", f"--repo={repo}", "show", f"--print-metadata-key={key}",
                           commit], capture_output=True, text=True, check=True).stdout.strip()


def test_v1_is_a_bootable_edge_commit(chain: dict[str, str | Path]) -> None:
    repo, c1 = Path(chain["repo"]), str(chain["v1"])
    assert _meta(repo, c1, "version") == "'1.0.0'"
    assert _meta(repo, c1, "ostree.bootable") == "true"
    kver = _meta(repo, c1, "ostree.linux").strip("'")
    co = Path(chain["co"])
    assert (co / f"usr/lib/modules/{kver}/vmlinuz").stat().st_size > 1_000_000
    assert (co / f"usr/lib/modules/{kver}/initramfs.img").stat().st_size > 1_000_000
    assert (co / "usr/lib/ostree/ostree-prepare-root").exists()       # Debian's ostree-boot
    assert (co / "usr/etc/dracut.conf.d/ostree.conf").exists()
    assert not list((co / "usr/etc/ssh").glob("ssh_host_*"))           # per-device host keys


def test_edge_image_ships_the_device_agent_and_it_runs(chain: dict[str, str | Path]) -> None:
    co = Path(chain["co"])
    units = co / "usr/lib/systemd/system"
    for unit in ("atomicedge-finalize-staged.service", "atomicedge-healthcheck.service",
                 "atomicedge-agent.timer"):
        assert (units / unit).is_file()
    assert (units / "multi-user.target.wants/atomicedge-healthcheck.service").is_symlink()
    assert (co / "usr/etc/atomicedge/agent.toml").is_file()
    # the image's own python3 runs the image's own copy of atomicedge
    ver = subprocess.run(["chroot", str(co), "/usr/bin/atomicedge", "--version"],
                         capture_output=True, text=True, check=False)
    assert ver.returncode == 0 and ver.stdout.startswith("atomicedge "), ver.stderr
    helped = subprocess.run(["chroot", str(co), "/usr/bin/atomicedge", "device", "--help"],
                            capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "health-check" in helped.stdout, helped.stderr


def test_v1_customizations_in_real_checkout(chain: dict[str, str | Path]) -> None:
    co = Path(chain["co"])
    group = (co / "usr/etc/group").read_text()
    assert any(ln.startswith("sudo:") and "core" in ln for ln in group.splitlines())
    assert "$6$" in next(ln for ln in (co / "usr/etc/shadow").read_text().splitlines()
                         if ln.startswith("core:"))
    zone = (co / "usr/etc/firewalld/zones/public.xml").read_text()
    assert '<port port="8080" protocol="tcp"/>' in zone
    wants = co / "usr/etc/systemd/system/multi-user.target.wants"
    assert (wants / "ssh.service").is_symlink() and (wants / "firewalld.service").is_symlink()
    st = (co / "usr/etc/gateway/app.conf").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (1000, 0o640)


def test_packages_lists_the_extra_package(chain: dict[str, str | Path]) -> None:
    out = _run("repo", "packages", "--repo", str(chain["repo"]), str(chain["v1"])).stdout
    names = {ln.split("\t")[0] for ln in out.splitlines()}
    assert {"curl", "systemd", "linux-image-amd64", "ostree-boot"} <= names
    assert "strace" not in names


def test_v2_chained_with_parent_diff_shows_strace_added(chain: dict[str, str | Path]) -> None:
    repo = Repo.open(Path(chain["repo"]))
    assert repo.load_commit(str(chain["v2"])).parent == chain["v1"]
    proc = _run("repo", "packages", "--repo", str(chain["repo"]), "--diff", str(chain["v1"]),
                str(chain["v2"]))
    assert "+ strace" in proc.stdout
    assert "0 removed" in proc.stderr
    added = {ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("+ ")}
    assert added <= {"strace", "libunwind8"}   # strace and its one library, nothing else


def test_demo_composes_v1_then_v2_and_reports_strace_added(
        chain: dict[str, str | Path], tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from atomicedge.lab import demo_compose as demo
    buf = io.StringIO()
    result = demo.run(tmp_path / "demo", Console(file=buf, width=120))
    assert "strace" in result["added"] and not result["removed"]
    assert "+ strace" in buf.getvalue()
    repo = Repo.open(Path(str(result["repo"])))
    assert repo.load_commit(str(result["v2"])).parent == result["v1"]
