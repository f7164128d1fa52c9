"""The seed's app: rootless under core, socket-activated on VIP:8080, scaled from (and back to)
zero, restarted by systemd after ``pkill -9 httpd`` (Restart=on-failure)."""

from __future__ import annotations

from collections.abc import Callable

from atomicedge.lab.demo_apps import AppLab, poll


def _ready(apps: AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    for name in ("edge1", "edge2"):
        poll(f"core's app socket on {name}", _ready_on(apps, name), 180, every=0.5)


def _ready_on(apps: AppLab, name: str) -> Callable[[], bool]:
    return lambda: apps.app_ready(name)


def test_first_request_starts_the_container_and_idle_scales_it_back_to_zero(
        apps: AppLab) -> None:
    _ready(apps)
    assert apps.containers("edge1") == [] and apps.containers("edge2") == []
    body, _secs = apps.get(timeout=120)
    assert body == "hello from app v1 on edge1\n"        # the primary holds the VIP
    assert apps.containers("edge1") == ["systemd-httpd"]
    assert apps.containers("edge2") == []
    # the proxy exits after 10 s without connections; the container's unit is then unneeded
    poll("the container to stop when idle", lambda: apps.containers("edge1") == [], 180,
         every=1.0)
    assert apps.user_systemctl("edge1", "is-active", "app-proxy.socket").stdout.strip() \
        == "active"
    body, _secs = apps.get(timeout=120)                  # and it scales from zero again
    assert body == "hello from app v1 on edge1\n"


def test_killed_httpd_is_restarted_by_systemd_on_failure(apps: AppLab) -> None:
    _ready(apps)
    apps.get(timeout=120)
    before = apps.user_systemctl("edge1", "show", "-p", "NRestarts", "--value",
                                 "httpd.service").stdout.strip()
    apps.lab.run("edge1", ["pkill", "-9", "-x", "httpd"])
    poll("httpd.service to restart", lambda: apps.user_systemctl(
        "edge1", "show", "-p", "NRestarts", "--value", "httpd.service").stdout.strip()
        == str(int(before) + 1), 120, every=0.2)
    # the proxy stays; connections in the moment the container is down are refused
    body = poll("the app to answer again", lambda: apps.try_get(timeout=10), 120, every=0.2)
    assert body == "hello from app v1 on edge1\n"
