"""Quadlet files become running containers under systemd inside an nspawn device.

The device is a Debian 12 tree (mmdebstrap: systemd, podman, crun, uidmap, dbus-user-session,
libpam-systemd, busybox-static; cached by ``lab.testtree.base_tree``) booted with systemd as
PID 1 under systemd-nspawn, with the Quadlet generators and the edge base's podman defaults
installed the way images get them (``workload.install``, ``workload.podman_defaults``). It is a
plain tree, not an ostree deployment of a composed image (that image fixture does not exist
yet). Inside, a driver unit waits for the containers, records what it sees in /out and powers
the device off; the assertions run here. The container image is busybox imported by a oneshot
unit from a tarball made here (no registry, no download).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.compose import closure
from atomicedge.lab import testtree
from atomicedge.workload.install import install_workload_files
from atomicedge.workload.podman_defaults import PACKAGES, install_podman_defaults

pytestmark = pytest.mark.slow
BOOT_TIMEOUT = 240

LOADER = """[Unit]
Description=load the busybox test image
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'podman image exists localhost/bb:1 || \
podman import --change CMD=/bin/sh /srv/bb.tar localhost/bb:1'
"""
WEB = """[Unit]
Description=rootful web app
Requires=bb-image.service
After=bb-image.service

[Container]
Image=localhost/bb:1
Exec=/bin/httpd -f -p 8080 -h /www
Network=host
AutoUpdate=registry
Volume=webdata.volume:/data

[Service]
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
APP = """[Unit]
Description=rootless web app
Requires=bb-image.service
After=bb-image.service

[Container]
Image=localhost/bb:1
Exec=/bin/sh -c "echo hello-rootless > /tmp/index.html && exec httpd -f -p 8081 -h /tmp"
Network=host
Volume=appdata.volume:/data

[Service]
Restart=on-failure

[Install]
WantedBy=default.target
"""
DRIVER = r"""#!/bin/sh
# records what the device sees in /out, then powers off
exec > /out/log.txt 2>&1
set -x
R=/out/result.txt
U="runuser -u core -- env XDG_RUNTIME_DIR=/run/user/1000"
wait_for() {  # poll for a condition, at most 60 s
  i=0; while [ $i -lt 600 ]; do "$@" && return 0; i=$((i+1)); sleep 0.1; done; return 1
}
wait_for systemctl is-active -q web.service
wait_for $U systemctl --user is-active -q app.service
# active = conmon started the container (--sdnotify=conmon); httpd listens a moment later
wait_for busybox wget -qO /dev/null http://127.0.0.1:8080/
wait_for busybox wget -qO /dev/null http://127.0.0.1:8081/
{
echo "web=$(systemctl is-active web.service)"
echo "app=$($U systemctl --user is-active app.service)"
echo "web_answer=$(busybox wget -qO- http://127.0.0.1:8080/)"
echo "app_answer=$(busybox wget -qO- http://127.0.0.1:8081/)"
echo "root_ps=$(podman ps --format '{{.Names}}' | sort | tr '\n' ' ')"
echo "user_ps=$($U podman ps --format '{{.Names}}' | sort | tr '\n' ' ')"
echo "user_volumes=$($U podman volume ls --format '{{.Name}}' | tr '\n' ' ')"
L='{{index .Config.Labels'
echo "label=$(podman inspect systemd-web --format "$L \"io.containers.autoupdate\"}}")"
echo "unit_label=$(podman inspect systemd-web --format "$L \"PODMAN_SYSTEMD_UNIT\"}}")"
echo "bad_unit=$(systemctl show -p LoadState --value bad.service)"
G=/run/systemd/generator
systemd-analyze verify $G/web.service $G/webdata-volume.service > /out/verify.txt 2>&1
echo "verify_rc=$?"
echo "main_pid_comm=$(cat /proc/$(systemctl show -p MainPID --value web.service)/comm)"
} >> $R
# Restart=on-failure sees the container die: kill its process, systemd starts it again
old=$(systemctl show -p MainPID --value web.service)
for p in $(busybox pidof httpd); do [ "$(stat -c %u /proc/$p)" = 0 ] && kill -9 $p; done
wait_for sh -c "[ \"\$(systemctl show -p NRestarts --value web.service)\" = 1 ]"
wait_for systemctl is-active -q web.service
wait_for busybox wget -qO /dev/null http://127.0.0.1:8080/
{
echo "restarts=$(systemctl show -p NRestarts --value web.service)"
new=$(systemctl show -p MainPID --value web.service)
echo "restarted_pid_differs=$([ "$new" != "$old" ] && echo yes)"
echo "answer_after_restart=$(busybox wget -qO- http://127.0.0.1:8080/)"
} >> $R
journalctl -b --no-pager > /out/journal.txt
echo done >> $R
systemctl poweroff --no-block
"""
DRIVER_UNIT = """[Unit]
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/bin/quadlet-driver.sh
[Install]
WantedBy=multi-user.target
"""


def _write(path: Path, text: str, mode: int = 0o644, owner: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)


def _busybox_image(tarball: Path, work: Path) -> None:
    root = work / "bbimg"
    (root / "bin").mkdir(parents=True)
    (root / "www").mkdir()
    (root / "tmp").mkdir(mode=0o1777)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for name in ("sh", "httpd", "echo"):
        os.symlink("busybox", root / "bin" / name)  # relative links work inside the image
    (root / "www/index.html").write_text("hello-rootful\n")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True, timeout=60)


def _device_tree(work: Path) -> Path:
    base = testtree.base_tree(testtree.BASE_PACKAGES + PACKAGES + ("busybox-static",))
    tree = work / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(tree)], check=True, timeout=300)
    install_workload_files(tree)
    closure.install(tree)  # the device's own runtime, as images ship it (no host code mounted)
    with open(tree / "etc/passwd", "a") as f:
        f.write("core:x:1000:1000::/home/core:/bin/sh\n")
    with open(tree / "etc/shadow", "a") as f:
        f.write("core:!:20000:0:99999:7:::\n")
    with open(tree / "etc/group", "a") as f:
        f.write("core:x:1000:\n")
    install_podman_defaults(tree, ["core"])
    _write(tree / "var/lib/systemd/linger/core", "")
    _busybox_image(tree / "srv/bb.tar", work)
    etc_q = tree / "etc/containers/systemd"
    _write(etc_q / "web.container", WEB)
    _write(etc_q / "webdata.volume", "[Volume]\nLabel=app=web\n")
    _write(etc_q / "bad.container", "[Container]\nImage=localhost/bb:1\nPublishPorts=1:1\n")
    _write(tree / "etc/systemd/system/bb-image.service", LOADER)
    home = tree / "home/core"
    _write(home / ".config/containers/systemd/app.container", APP, owner=1000)
    _write(home / ".config/containers/systemd/appdata.volume", "[Volume]\n", owner=1000)
    _write(home / ".config/systemd/user/bb-image.service", LOADER, owner=1000)
    subprocess.run(["chown", "-R", "1000:1000", str(home)], check=True, timeout=60)
    _write(tree / "usr/local/bin/quadlet-driver.sh", DRIVER, 0o755)
    _write(tree / "etc/systemd/system/quadlet-driver.service", DRIVER_UNIT)
    os.symlink("../quadlet-driver.service",
               tree / "etc/systemd/system/multi-user.target.wants/quadlet-driver.service")
    return tree


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    work = tmp_path_factory.mktemp("quadlet-device")
    tree = _device_tree(work)
    out = work / "out"
    out.mkdir()
    argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(tree),
            "--private-network", "--console=read-only", f"--bind={out}:/out", "-b"]
    with open(work / "console.txt", "w") as console:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=BOOT_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()  # nspawn takes its container down with it
                proc.wait()
    result = {}
    if (out / "result.txt").exists():
        for line in (out / "result.txt").read_text().splitlines():
            key, _, value = line.partition("=")
            result[key] = value.strip()
    yield result, work
    shutil.rmtree(tree, ignore_errors=True)


def test_container_file_runs_under_systemd_system_wide(booted: tuple[dict[str, str], Path],
                                                       ) -> None:
    result, work = booted
    assert "done" in result, (work / "console.txt").read_text()[-3000:]
    assert result["web"] == "active"
    assert result["web_answer"] == "hello-rootful"
    assert result["root_ps"].split() == ["systemd-web"]
    assert result["label"] == "registry"  # AutoUpdate=registry
    assert result["unit_label"] == "web.service"  # what podman auto-update restarts
    assert result["main_pid_comm"] == "conmon"


def test_container_file_runs_rootless_for_a_lingering_user(
        booted: tuple[dict[str, str], Path]) -> None:
    result, _ = booted
    assert result["app"] == "active"
    assert result["app_answer"] == "hello-rootless"
    assert result["user_ps"].split() == ["systemd-app"]
    assert result["user_volumes"].split() == ["systemd-appdata"]


def test_generated_unit_verifies_inside_the_device(booted: tuple[dict[str, str], Path]) -> None:
    result, work = booted
    assert result["verify_rc"] == "0", (work / "out/verify.txt").read_text()
    assert (work / "out/verify.txt").read_text() == ""


def test_bad_quadlet_file_is_skipped_and_logged_with_file_and_line(
        booted: tuple[dict[str, str], Path]) -> None:
    result, work = booted
    assert result["bad_unit"] == "not-found"
    logs = (work / "console.txt").read_text() + (work / "out/journal.txt").read_text()
    assert ("/etc/containers/systemd/bad.container:3: unsupported key 'PublishPorts' in group "
            "'Container'") in logs


def test_restart_on_failure_sees_the_container_die(booted: tuple[dict[str, str], Path]) -> None:
    result, _ = booted
    assert result["restarts"] == "1"
    assert result["restarted_pid_differs"] == "yes"
    assert result["answer_after_restart"] == "hello-rootful"
