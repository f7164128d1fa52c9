"""Blueprint ``[[containers]]``: validation (bad references refused with the key and line), the
digest resolved from a real registry and hashed into the compose input, and the pull into a
tree's read-only image store that podman reads with the registry gone.

The registry is Debian's docker-registry on 127.0.0.1 (a free port, temp storage, stopped by
PID); images are BusyBox from busybox-static (:mod:`atomicedge.lab.registry`); skopeo and podman
are the real tools (podman with the machine notes' settings: runc, cgroupfs, --root/--runroot in
temp dirs). The full path (compose -> device boot -> rootless app) is in tests/workloads.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.compose import build, containers
from atomicedge.compose.blueprint import BlueprintError, ContainerSpec
from atomicedge.compose.mmdebstrap import unmount_below
from atomicedge.compose.validate import parse_text
from atomicedge.lab.registry import Registry
from atomicedge.workload import podman_defaults

HEAD = 'name = "gw"\nversion = "1.0.0"\n[[packages]]\nname = "podman"\n'
PODMAN = ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def test_containers_entry_becomes_a_spec_with_osbuild_defaults() -> None:
    bp = parse_text(HEAD + '[[containers]]\nsource = "registry.example.com:5000/app:v1"\n'
                    '[[containers]]\nsource = "localhost/tools@sha256:' + "a" * 64 + '"\n'
                    'name = "registry.example.com/tools:pinned"\ntls-verify = false\n')
    assert bp.containers == (
        ContainerSpec("registry.example.com:5000/app:v1", None, True),
        ContainerSpec("localhost/tools@sha256:" + "a" * 64,
                      "registry.example.com/tools:pinned", False))


@pytest.mark.parametrize(("entry", "where", "needle"), [
    ('source = "app:v1"', "line 6: containers[0].source", "not fully qualified"),
    ('source = "docker.io/Library/App:v1"', "line 6: containers[0].source", "not a valid"),
    ('source = "quay.io/app:v1@sha256:' + "b" * 64 + '"', "line 6: containers[0].source",
     "both a tag and a digest"),
    ('source = "quay.io/app:v1"\nname = "quay.io/app@sha256:' + "c" * 64 + '"',
     "line 7: containers[0].name", "a stored name takes a tag"),
    ('source = "quay.io/app:v1"\ntls-verify = "no"', "line 7: containers[0].tls-verify",
     "must be a boolean"),
    ('source = "quay.io/app:v1"\nsorce = "x"', "line 7: containers[0].sorce", "unknown key"),
    ('name = "quay.io/app:v1"', "line 5: containers[0]", "container has no source"),
])
def test_bad_containers_entry_is_refused_naming_the_key_and_line(
        entry: str, where: str, needle: str) -> None:
    with pytest.raises(BlueprintError) as exc:
        parse_text(HEAD + "[[containers]]\n" + entry + "\n", "bp.toml")
    problem = next(ln for ln in str(exc.value).splitlines() if where in ln)
    assert needle in problem and "(hint: " in problem, problem


def test_two_entries_stored_under_one_name_and_containers_without_podman_are_refused() -> None:
    with pytest.raises(BlueprintError) as exc:
        parse_text(HEAD + '[[containers]]\nsource = "quay.io/a:1"\nname = "quay.io/x:1"\n'
                   '[[containers]]\nsource = "quay.io/b:1"\nname = "quay.io/x:1"\n')
    assert "containers[1].name: 'quay.io/x:1' is stored twice" in str(exc.value)
    with pytest.raises(BlueprintError) as exc:
        parse_text('name = "gw"\n[[containers]]\nsource = "quay.io/a:1"\n')
    assert "embedded images need podman" in str(exc.value)


def test_storage_conf_names_the_drivers_and_the_read_only_store() -> None:
    files = podman_defaults.podman_files(["core"], image_store=True)
    conf = files["containers/storage.conf"]
    assert f'driver = "{podman_defaults.STORAGE_DRIVER}"' in conf
    assert 'additionalimagestores = ["/usr/share/containers/storage"]' in conf
    assert 'graphroot = "/var/lib/containers/storage"' in conf   # c/storage wants it spelled
    rootless = files[podman_defaults.ROOTLESS_STORAGE_CONF]
    assert f'driver = "{podman_defaults.ROOTLESS_STORAGE_DRIVER}"' in rootless
    assert "root =" not in rootless                      # each user keeps its own storage
    assert 'additionalimagestores = ["/usr/share/containers/storage"]' in rootless
    assert "containers/storage.conf" not in podman_defaults.podman_files(["core"])
    links = containers.user_links([("core", "/var/home/core")])
    assert ("L /var/home/core/.config/containers/storage.conf - - - - "
            "/etc/containers/storage-rootless.conf") in links


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry.start(tmp_path_factory.mktemp("reg") / "storage", "127.0.0.1") as reg:
        yield reg


def _spec(reg: Registry, tag: str) -> ContainerSpec:
    return ContainerSpec(reg.ref(f"app:{tag}"), "registry.edge.internal/app:prod", False)


def test_new_image_behind_the_same_tag_is_a_new_compose_input(registry: Registry) -> None:
    bp = parse_text(HEAD)
    registry.push_busybox_image("app:a", files={"v": "a\n"}, cmd=["/bin/cat", "/v"])
    registry.push_busybox_image("app:b", files={"v": "b\n"}, cmd=["/bin/cat", "/v"])
    registry.retag("app:a", "app:moving")
    first = containers.resolve([_spec(registry, "moving")])
    assert first[0].digest == registry.digest("app:a")
    assert containers.resolve([_spec(registry, "moving")]) == first    # same image, same input
    registry.retag("app:b", "app:moving")
    second = containers.resolve([_spec(registry, "moving")])
    assert second[0].digest == registry.digest("app:b") != first[0].digest
    assert build.input_hash("k", bp, first) != build.input_hash("k", bp, second)
    assert build.input_hash("k", bp, first) == build.input_hash("k", bp, first)
    assert first[0].pull_ref == f"{registry.host}/app@{first[0].digest}"


def test_unreachable_source_fails_the_compose_with_the_reference_and_a_hint(
        registry: Registry, tmp_path: Path) -> None:
    with Registry.start(tmp_path / "gone", "127.0.0.1") as gone:
        spec = ContainerSpec(gone.ref("app:v1"), None, False)
    from atomicedge.errors import ToolError
    with pytest.raises(ToolError) as exc:
        containers.resolve([spec])
    assert spec.source in str(exc.value) and "registry" in (exc.value.hint or "")


def test_embedded_image_runs_from_the_read_only_store_with_the_registry_down(
        tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    with Registry.start(tmp_path / "storage", "127.0.0.1") as reg:
        reg.push_busybox_image("app:v1", files={"www/answer": "embedded v1\n"},
                               cmd=["/bin/cat", "/www/answer"])
        images = containers.resolve([_spec(reg, "v1")])
        containers.embed(tree, images, tmp_path)
    store = tree / containers.STORE
    for driver in podman_defaults.STORE_DRIVERS:               # root's and rootless users'
        meta = store / f"{driver}-images" / "images.json"
        assert meta.stat().st_mode & 0o444 == 0o444         # readable for rootless users
        _run_from_store(tmp_path / driver, store, driver, images[0].digest)


def _run_from_store(tmp_path: Path, store: Path, driver: str, digest: str) -> None:
    runroot = Path(tempfile.mkdtemp(prefix="ae-ctr-", dir="/tmp"))   # podman: short paths
    podman = ["podman", *PODMAN, "--root", str(tmp_path / "root"), "--runroot", str(runroot),
              "--storage-driver", driver, "--storage-opt", f"{driver}.imagestore={store}"]
    try:
        out = subprocess.run([*podman, "run", "--rm", "--network", "none",
                              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                              "registry.edge.internal/app:prod"], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "embedded v1\n"
        listed = subprocess.run([*podman, "images", "--format", "{{.Repository}}:{{.Tag}} "
                                 "{{.Digest}} {{.ReadOnly}}"], capture_output=True, text=True,
                                timeout=60)
        assert listed.stdout.splitlines() == [f"registry.edge.internal/app:prod {digest} true"]
    finally:
        subprocess.run([*podman, "rm", "-a", "-f"], capture_output=True, check=False)
        unmount_below(tmp_path)
        unmount_below(store)          # rootful overlay makes the image store's overlay/ private
        unmount_below(runroot)
        shutil.rmtree(runroot, ignore_errors=True)
