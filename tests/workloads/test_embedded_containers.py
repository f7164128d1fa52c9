"""An image composed with ``[[containers]]`` starts its app with the registry down (issue 11,
must show 6).

``examples/gateway-apps.toml`` embeds app v1 (pulled by digest when the image was composed)
in ``/usr/share/containers/storage``, an additional read-only image store for root and for
the rootless user core. The lab registry is not running (tests that want it start and stop it
themselves); the devices' registries.conf points the image name at where it would be.
"""

from __future__ import annotations

import socket

from atomicedge.lab.demo_apps import APP_IMAGE, AppLab, poll


def _registry_answers(apps: AppLab) -> bool:
    host, port = apps.registry_host.split(":")

    def connect() -> bool:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            return True
        except OSError:
            return False
    return apps.lab.in_host(connect)


def test_composed_image_starts_its_app_with_the_registry_down(apps: AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    poll("core's app socket on edge1", lambda: apps.app_ready("edge1"), 180, every=0.5)
    assert not _registry_answers(apps)
    apps.forget_pulled_images("edge1")          # whatever earlier tests pulled is gone
    assert apps.containers("edge1") == []
    # core's own storage is empty: the only image is the embedded, read-only one
    images = apps.podman("edge1", "images", "--format",
                         "{{.Repository}}:{{.Tag}} {{.ReadOnly}}").stdout.split("\n")
    assert [ln for ln in images if ln] == [f"{APP_IMAGE} true"]
    body, _secs = apps.get(timeout=120)
    assert body == "hello from app v1 on edge1\n"
    assert apps.containers("edge1") == ["systemd-httpd"]
    # a pull would have needed the registry: it fails, so nothing came from there
    pull = apps.podman("edge1", "pull", APP_IMAGE, timeout=300)
    assert pull.returncode != 0


def test_root_runs_the_embedded_image_too(apps: AppLab) -> None:
    assert not _registry_answers(apps)
    # --network host: a network namespace of its own fails in the device (crun cannot write
    # the read-only /proc/sys nspawn gives it)
    out = apps.lab.run("edge2", ["podman", "run", "--rm", "--network", "host", APP_IMAGE,
                                 "/bin/sh", "-c", "echo root runs it"], timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "root runs it\n"
    flags = apps.lab.run("edge2", ["podman", "images", "--format",
                                   "{{.Repository}}:{{.Tag}} {{.ReadOnly}}"]).stdout
    assert f"{APP_IMAGE} true" in flags.splitlines()
