"""Seed 003 under QEMU: a Fedora CoreOS Config -> Ignition -> fw_cfg -> applied once, on boot 1.

The FCC ``tests/provision/data/hello-fcos.bu`` (the user core with an ssh key, the registry
marked insecure for podman, and the seed's ``hello.service``: ``podman pull`` then
``podman run -d --name hello-server -p 8080:8080``) is converted by ``atomicedge butane``
(checked by Debian's ``ignition-validate``) and given to ``atomicedge vm run IMAGE --ignition
FILE``, which passes it to QEMU as ``-fw_cfg name=opt/com.coreos/config``. The image is
``examples/fcos-hello.toml`` (podman, no users) composed and built as a qcow2. The container
image is built on the host from Debian's busybox-static and pushed to a docker-registry on the
host's 127.0.0.1 (:mod:`atomicedge.lab.registry`); the guest pulls it through QEMU's user
network as 10.0.2.2:PORT. Nothing is downloaded from outside and nothing is faked: GRUB, the
kernel's qemu_fw_cfg driver, systemd, sshd, podman, crun and the CNI port mapping are real.

One VM, two boots: the second is a reboot inside the same QEMU process, so the config is still
offered on fw_cfg, and must not be applied again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atomicedge.compose import disk
from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, compose
from atomicedge.compose.validate import load
from atomicedge.device.ignition import FW_CFG, MARKER
from atomicedge.errors import ToolError
from atomicedge.lab import registry, vm
from atomicedge.ostree.repo import Repo
from tests.lab.helpers import ATOMICEDGE

# compose (cached package tree) + disk build + two TCG boots with a podman pull each
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent.parent
FCC = ROOT / "tests/provision/data/hello-fcos.bu"
BLUEPRINT = ROOT / "examples/fcos-hello.toml"
REF = "debian/12/x86_64/fcos-hello"
NAME = "fcos-hello"
SAMPLE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHelloProvisioningTestKeyOnly core@example"
SAMPLE_REGISTRY = "10.0.2.2:5000"
IMAGE_PATH = "gbsalinetti/hello-server"
HELLO = "Hello World from hello-server!\n"
BOOT_TIMEOUT = 900.0      # TCG on 2 busy cores: a boot is 30-60 s idle, minutes when loaded
SERVICE_TIMEOUT = 600.0   # pull + run of the container under TCG
_LOCK = Path(tempfile.gettempdir()) / "atomicedge-test-images.lock"   # as tests/images.py


@dataclass(frozen=True)
class Provisioned:
    ignition: Path       # the Ignition JSON `atomicedge butane` wrote
    key: Path            # the private half of the key in the config
    public_key: str
    image_ref: str       # what hello.service pulls, as the guest names it
    http_port: int       # host 127.0.0.1 -> guest 8080
    ssh_port: int        # host 127.0.0.1 -> guest 22


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fcos_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("fcos")
    start = time.monotonic()
    with open(_LOCK, "w") as lock:   # concurrent sessions stay off the same cache entry
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            res = compose(ComposeRequest(blueprint=load(BLUEPRINT), repo=work / "repo",
                                         sources=Sources.host(), ref=REF))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.utime(_LOCK)
    composed = time.monotonic()
    out = work / "fcos-hello.qcow2"
    disk.build(disk.DiskSpec(work / "repo", REF, res.commit, out, "qcow2",
                             kargs=disk.kargs_of(Repo.open(work / "repo"), res.commit),
                             agent=True, dhcp=True))
    print(f"\nfcos-hello composed in {composed - start:.1f} s, qcow2 built in "
          f"{time.monotonic() - composed:.1f} s")
    return out


@pytest.fixture(scope="module")
def hello_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The registry on the host's 127.0.0.1 holding gbsalinetti/hello-server:latest."""
    work = tmp_path_factory.mktemp("registry")
    with registry.Registry.start(work / "data", "127.0.0.1") as reg:
        reg.push_busybox_image(
            f"{IMAGE_PATH}:latest", files={"www/index.html": HELLO},
            # sh as PID 1 with a TERM trap: `podman stop` ends it at once (busybox httpd as
            # PID 1 ignores SIGTERM and would cost the stop's full 10 s on every shutdown)
            cmd=["/bin/sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait $!"])
        yield reg.port


@pytest.fixture(scope="module")
def provisioned(hello_registry: int, tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    """The seed's FCC with this run's registry port and a fresh key, through `atomicedge butane`."""
    work = tmp_path_factory.mktemp("ignition")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "core@test",
                    "-f", str(key)], check=True, timeout=60)
    public = (work / "id_ed25519.pub").read_text().strip()
    guest_registry = f"10.0.2.2:{hello_registry}"
    text = FCC.read_text()
    assert SAMPLE_KEY in text and SAMPLE_REGISTRY in text
    fcc = work / "hello.bu"
    fcc.write_text(text.replace(SAMPLE_KEY, public).replace(SAMPLE_REGISTRY, guest_registry))
    ign = work / "hello.ign"
    proc = subprocess.run([ATOMICEDGE, "butane", str(fcc), "-o", str(ign), "--strict"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Provisioned(ign, key, public, f"{guest_registry}/{IMAGE_PATH}", free_port(),
                       free_port())


@pytest.fixture(scope="module")
def booted(fcos_qcow2: Path, provisioned: Provisioned, vm_dir: Path) -> Iterator[str]:
    start = time.monotonic()
    proc = subprocess.run([ATOMICEDGE, "vm", "run", str(fcos_qcow2), "--name", NAME,
                           "--ignition", str(provisioned.ignition),
                           "--forward", f"{provisioned.http_port}:8080",
                           "--forward", f"{provisioned.ssh_port}:22", "--detach"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    try:
        vm.wait_agent(NAME, BOOT_TIMEOUT)
        print(f"\nfirst boot: QEMU start -> agent answers {time.monotonic() - start:.1f} s")
        yield NAME
    finally:
        vm.kill(NAME)


def sh(cmd: str, *, ok: bool = True) -> str:
    res = vm.exec_(NAME, cmd, timeout=300)
    if ok:
        assert res.rc == 0, (cmd, res.rc, res.text, res.err.decode(errors="replace"))
    return res.text


def wait_active(unit: str, timeout: float = SERVICE_TIMEOUT) -> None:
    """Poll until ``unit`` is active; a failed unit fails at once with its journal."""
    deadline = time.monotonic() + timeout
    while True:
        state = sh(f"systemctl is-active {unit}", ok=False).strip()
        if state == "active":
            return
        if state == "failed" or time.monotonic() > deadline:
            journal = sh(f"journalctl -b -u {unit} --no-pager | tail -n 40", ok=False)
            pytest.fail(f"{unit} is {state}:\n{journal}")
        time.sleep(1)


def http_get(port: int, timeout: float = SERVICE_TIMEOUT) -> str:
    """GET / through the forward; QEMU accepts on the host before the guest listens, so poll."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
                return str(resp.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing answered on 127.0.0.1:{port}: {exc}")
        time.sleep(1)


def wait_journal(args: str, text: str, timeout: float = SERVICE_TIMEOUT) -> str:
    """Poll ``journalctl ARGS`` until it holds ``text`` (journald reads a unit's stdout
    asynchronously: on a loaded machine the lines land after the unit has finished)."""
    deadline = time.monotonic() + timeout
    while True:
        out = sh(f"journalctl {args} -o cat --no-pager")
        if text in out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"journalctl {args}: no {text!r} in:\n{out}")
        time.sleep(1)


def boot_id() -> str:
    return sh("cat /proc/sys/kernel/random/boot_id").strip()


def container_check(p: Provisioned) -> None:
    """hello.service enabled and active, its container up from our image, answering on 8080."""
    assert sh("systemctl is-enabled hello.service").strip() == "enabled"
    wait_active("hello.service")
    names = sh("podman ps --filter status=running --format '{{.Names}} {{.Image}}'")
    assert f"hello-server {p.image_ref}:latest" in names.splitlines(), names
    assert http_get(p.http_port) == HELLO


def test_first_boot_applies_the_config_read_from_fw_cfg(booted: str,
                                                       provisioned: Provisioned) -> None:
    wait_active("atomicedge-ignition-firstboot.service")
    record = json.loads(sh(f"cat /{MARKER}"))
    # the guest found the config through the qemu_fw_cfg driver: vm run passed it as fw_cfg
    assert record["source"] == str(FW_CFG)
    assert record["sha256"] == hashlib.sha256(provisioned.ignition.read_bytes()).hexdigest()
    assert {"user core", "unit hello.service", "file /etc/hello/motd"} <= set(record["applied"])
    journal = wait_journal("-b -u atomicedge-ignition-firstboot.service", "ignition: done")
    assert "ignition: user core" in journal, journal


def test_core_made_by_ignition_logs_in_over_ssh_with_its_key(booted: str,
                                                            provisioned: Provisioned) -> None:
    # the image has no core: the user is Ignition's (the commit's /usr/etc/passwd lacks it)
    assert sh("grep -c '^core:' /usr/etc/passwd", ok=False).strip() == "0"
    assert sh("getent passwd core").split(":")[5] == "/home/core"
    keys = sh("cat /home/core/.ssh/authorized_keys").splitlines()
    assert keys == [provisioned.public_key]
    wait_active("ssh.service")
    proc = subprocess.run(
        ["ssh", "-i", str(provisioned.key), "-p", str(provisioned.ssh_port),
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=120",
         "core@127.0.0.1", "id -un; systemctl is-enabled hello.service"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["core", "enabled"]


def test_hello_service_runs_the_container_and_it_answers_on_8080(
        booted: str, provisioned: Provisioned) -> None:
    container_check(provisioned)
    assert sh("cat /etc/hello/motd") == "Hello from Ignition!\n"
    conf = sh("cat /etc/containers/registries.conf.d/50-lab-registry.conf")
    assert f'location = "{provisioned.image_ref.split("/")[0]}"' in conf


def test_second_boot_does_not_apply_the_config_again(booted: str,
                                                     provisioned: Provisioned) -> None:
    marker = sh(f"stat -c %Y:%s /{MARKER}; sha256sum /{MARKER}")
    machine_id = sh("cat /etc/machine-id").strip()
    sh("journalctl --flush")
    sh("echo 'changed between the boots' > /etc/hello/motd && sync")
    first = boot_id()
    try:   # the agent may be stopped before its answer leaves the guest
        vm.exec_(NAME, "systemctl reboot --no-block", timeout=60, answer_timeout=60)
    except ToolError:
        pass
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        try:
            res = vm.exec_(NAME, "cat /proc/sys/kernel/random/boot_id", timeout=10,
                           answer_timeout=15)
            if res.rc == 0 and res.text.strip() not in ("", first):
                break
        except (ToolError, OSError):
            pass
        assert time.monotonic() < deadline, "the guest did not come back after its reboot"
        time.sleep(1)
    # the config is still offered on fw_cfg, the applier is skipped by its marker
    assert sh(f"sha256sum < {FW_CFG}").split()[0] == hashlib.sha256(
        provisioned.ignition.read_bytes()).hexdigest()
    unit = "atomicedge-ignition-firstboot.service"
    assert sh(f"systemctl show -p ConditionResult --value {unit}").strip() == "no"
    # one machine across the boots (its id written on the first), so its journal lists both
    assert sh("cat /etc/machine-id").strip() == machine_id
    assert first.replace("-", "") in sh("journalctl --list-boots --no-pager")
    # the first boot applied the config, and no boot since has
    assert "ignition: done" in wait_journal(f"-b -1 -u {unit}", "ignition: done")
    assert wait_journal(f"-u {unit}", "ignition: done").count("ignition: done") == 1
    assert "ignition:" not in sh(f"journalctl -b -o cat --no-pager -u {unit}")
    assert sh(f"stat -c %Y:%s /{MARKER}; sha256sum /{MARKER}") == marker
    assert sh("cat /etc/hello/motd") == "changed between the boots\n"
    assert sh("cat /home/core/.ssh/authorized_keys").splitlines() == [provisioned.public_key]
    # still enabled: hello.service starts its container again on the second boot
    container_check(provisioned)
