"""podman auto-update of the seed's app from the site's registry (issue 11, must show 4).

The lab registry (Debian's docker-registry on the lab network, ``<lab host>:5000``) serves the
app's images v1, v2 and a v3 whose command does not exist (it fails to start); each device's
provisioning maps the name the image's unit uses (``registry.edge.internal``) to it, insecure.
Moving ``prod`` and starting core's ``podman-auto-update.service`` (what its timer does) must
run the new image; a broken one must be rolled back by podman to the previous image, with the
unit active again. Real parts throughout: the composed image booted in lab devices, rootless
podman 4.3.1 under core's systemd, the registry, skopeo moving the tag.
"""

from __future__ import annotations

import tomllib

import pytest

from atomicedge.errors import UsageError
from atomicedge.lab.demo_apps import APP_IMAGE, AppLab, poll
from atomicedge.workload import provision

SITE = """hostname = "edge1"

[registry]
location = "10.213.0.1:5000"
prefix = "registry.edge.internal"
insecure = true
"""


def test_site_registry_of_the_provisioning_file_maps_the_image_name_to_it() -> None:
    files = provision.etc_files(provision.parse(SITE))
    conf = tomllib.loads(files[provision.REGISTRIES_D])
    assert conf["registry"] == [{"prefix": "registry.edge.internal",
                                 "location": "10.213.0.1:5000", "insecure": True}]
    only = provision.parse('[registry]\nlocation = "registry.example.com"\n')
    assert only.registry == provision.Registry("registry.example.com", "registry.example.com")


@pytest.mark.parametrize(("bad", "where"), [
    (SITE.replace("10.213.0.1:5000", "http://10.213.0.1:5000"), "p.toml:4: registry.location:"),
    (SITE.replace("10.213.0.1:5000", "10.213.0.1:99999"), "p.toml:4: registry.location:"),
    (SITE.replace('"registry.edge.internal"', '"Registry/App"'), "p.toml:5: registry.prefix:"),
    (SITE.replace("insecure = true", 'insecure = "yes"'), "p.toml:6: registry.insecure:"),
    (SITE.replace("insecure", "insecur"), "p.toml:6: registry.insecur: unknown key"),
    (SITE.replace('location = "10.213.0.1:5000"\n', ""), "p.toml:3: registry: location is"),
])
def test_bad_registry_setting_is_refused_with_file_line_and_key(bad: str, where: str) -> None:
    with pytest.raises(UsageError) as exc:
        provision.parse(bad, "p.toml")
    assert str(exc.value).startswith(where), str(exc.value)


def _row(report: str) -> list[str]:
    """podman auto-update's table row for the app's unit (UNIT CONTAINER IMAGE POLICY
    UPDATED)."""
    rows = [ln.split() for ln in report.splitlines() if ln.split()[:1] == ["httpd.service"]]
    assert len(rows) == 1, report
    return rows[0]


def _answer(version: str) -> str:
    return f"hello from app {version} on edge1\n"


def _while_held(apps: AppLab) -> tuple[str, str, str]:
    """With a connection held open (the app cannot scale to zero meanwhile): the unit's
    state, the image of the running container, a fresh request's answer."""
    with apps.connection():
        poll("the app to run", lambda: apps.running_image("edge1"), 120, every=0.2)
        state = apps.user_systemctl("edge1", "is-active", "httpd.service").stdout.strip()
        image = apps.running_image("edge1")
        body = apps.get(timeout=120)[0]
    return state, image, body


def test_prod_tag_moved_to_v2_updates_the_app_and_a_broken_v3_is_rolled_back(
        apps: AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    poll("core's app socket on edge1", lambda: apps.app_ready("edge1"), 180, every=0.5)
    apps.forget_pulled_images("edge1")          # from what the image ships: v1 embedded
    with apps.start_registry() as reg:
        try:
            assert apps.get(timeout=120)[0] == _answer("v1")
            v2 = reg.image_id("app:v2")
            reg.retag("app:v2", "app:prod")
            report = apps.auto_update("edge1")
            row = _row(report)
            assert row[-3:] == [APP_IMAGE, "registry", "true"], report
            assert {"systemd-httpd", "(systemd-httpd)"} & set(row), report
            assert _while_held(apps) == ("active", v2, _answer("v2"))

            reg.retag("app:v3", "app:prod")         # its command does not exist
            report = apps.auto_update("edge1")
            assert _row(report)[-2:] == ["rolled", "back"], report
            journal = apps.lab.run("edge1", ["journalctl", "_SYSTEMD_USER_UNIT=httpd.service",
                                             "-o", "cat", "--no-pager"]).stdout
            assert "app-server" in journal            # v3 was started, and failed
            assert apps.podman("edge1", "image", "inspect", "--format", "{{.Id}}",
                               APP_IMAGE).stdout.strip() == v2       # re-tagged by podman
            assert _while_held(apps) == ("active", v2, _answer("v2"))
        finally:
            reg.retag("app:v1", "app:prod")
            apps.forget_pulled_images("edge1")      # the next tests see the image's v1
