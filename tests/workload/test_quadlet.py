"""The Quadlet generator: the units it writes, judged by real systemd (``systemd-analyze verify``)
and by Debian's own ``python3`` (the generator ships in images and may use the stdlib only)."""

from __future__ import annotations

import itertools
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from atomicedge.cli.main import main as cli_main
from atomicedge.workload import podman_defaults, quadlet
from atomicedge.workload.unitfile import parse, split_words

SRC = Path(__file__).resolve().parents[2] / "src"

WEB = """\
# the seed's app, as it would be written for Fedora/RHEL
[Unit]
Description=Web app
After=cache.container

[Container]
Image=registry.example:5000/edge/web:prod
ContainerName=web
Exec=/bin/sh -c "echo 'hello world' > /tmp/i && exec httpd -f -p 8080 -h /tmp"
Environment=GREETING=hi "SPACED=a b"
EnvironmentFile=web.env
PublishPort=127.0.0.1:8080:8080
Network=app.network
Volume=data.volume:/data:Z
Volume=/srv/static:/static:ro
User=1000
Group=1000
Label=tier=front
Annotation=owner=edge
AutoUpdate=registry
PodmanArgs=--tz=UTC
StopSignal=SIGTERM

[Service]
Restart=on-failure
TimeoutStartSec=120

[Install]
WantedBy=multi-user.target
"""
CACHE = "[Container]\nImage=localhost/cache:1\nAutoUpdate=local\nNetwork=host\n"
DATA = "[Volume]\nUser=1000\nGroup=1000\nLabel=app=web\n"
APP = "[Network]\nSubnet=10.89.0.0/24\nGateway=10.89.0.1\nLabel=app=web\n"


def write(d: Path, files: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def run_generator(unit_dirs: list[Path], out: Path, *flags: str,
                  ) -> subprocess.CompletedProcess[str]:
    """The generator as systemd runs it: Debian's python3, nothing but the stdlib and our src."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "PYTHONNOUSERSITE": "1",
           "QUADLET_UNIT_DIRS": ":".join(str(d) for d in unit_dirs), "HOME": str(out.parent)}
    return subprocess.run(["/usr/bin/python3", "-S", "-m", "atomicedge.workload.quadlet",
                           "-no-kmsg-log", *flags, str(out), str(out) + ".early",
                           str(out) + ".late"], env=env, capture_output=True, text=True,
                          timeout=60)


def exec_start(unit_text: str) -> list[str]:
    unit = parse(unit_text, "x.service")
    line = unit.lookup_line("Service", "ExecStart")
    assert line is not None
    return split_words(line.value, unescape=True)


def verify(unit_dir: Path, *names: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}
    if user:  # the user manager wants a runtime directory
        (unit_dir.parent / "xdg-run").mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(unit_dir.parent / "xdg-run")
    return subprocess.run(["systemd-analyze", *(["--user"] if user else []), "verify",
                           "--man=no", *(str(unit_dir / n) for n in names)],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write(tmp_path / "quadlets", {"web.container": WEB, "cache.container": CACHE,
                                        "data.volume": DATA, "app.network": APP,
                                        "web.env": "A=1\n"})


def test_generated_units_pass_systemd_analyze_verify(app_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    proc = run_generator([app_dir], out)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.glob("*.service"))
    assert names == ["app-network.service", "cache.service", "data-volume.service",
                     "web.service"]
    checked = verify(out, *names)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    # [Install] WantedBy= applied the way systemctl enable would
    link = out / "multi-user.target.wants" / "web.service"
    assert os.readlink(link) == "../web.service"
    assert not (out / "multi-user.target.wants" / "cache.service").exists()


def test_verify_catches_what_it_should(app_dir: Path, tmp_path: Path) -> None:
    """The verify step is a real check: a generated unit whose podman is missing fails it."""
    out = tmp_path / "gen"
    env_podman = os.environ.get("PODMAN")
    os.environ["PODMAN"] = "/nonexistent/podman"
    try:
        result = quadlet.generate(False, dirs=[str(app_dir)])
    finally:
        os.environ.pop("PODMAN")
        if env_podman is not None:
            os.environ["PODMAN"] = env_podman
    quadlet.write_output(result, str(out))
    checked = verify(out, "cache.service")
    assert checked.returncode != 0 and "/nonexistent/podman" in checked.stderr


def test_container_unit_runs_podman_as_quadlet_would_on_the_device(app_dir: Path) -> None:
    result = quadlet.generate(False, dirs=[str(app_dir)], argv0="podman-system-generator")
    web = result.units["web.service"]
    unit = parse(web, "web.service")
    args = exec_start(web)
    assert args[:7] == ["/usr/bin/podman", "run", "--name", "web", "--replace", "--rm",
                        "--cgroups=disabled"]
    assert args[-4:] == ["registry.example:5000/edge/web:prod", "/bin/sh", "-c",
                         "echo 'hello world' > /tmp/i && exec httpd -f -p 8080 -h /tmp"]
    pairs = list(itertools.pairwise(args))
    for pair in [("--label", "io.containers.autoupdate=registry"), ("--env", "GREETING=hi"),
                 ("--env", "SPACED=a b"), ("--publish", "127.0.0.1:8080:8080"),
                 ("--user", "1000:1000"), ("--label", "tier=front"),
                 ("--annotation", "owner=edge"), ("--stop-signal", "SIGTERM"),
                 ("--network", "systemd-app"), ("-v", "systemd-data:/data:Z"),
                 ("-v", "/srv/static:/static:ro"),
                 ("--env-file", str(app_dir / "web.env"))]:
        assert pair in pairs, pair
    assert "--sdnotify=conmon" in args and "-d" in args and "--tz=UTC" in args
    assert unit.lookup("Service", "Type") == "notify"
    assert unit.lookup("Service", "NotifyAccess") == "all"
    assert unit.lookup("Service", "KillMode") == "mixed"
    assert unit.lookup("Service", "Restart") == "on-failure"  # [Service] passes through
    assert unit.lookup("Service", "Environment") == "PODMAN_SYSTEMD_UNIT=%n"
    assert unit.lookup("Service", "ExecStop") == "/usr/bin/podman rm -v -f -i web"
    assert unit.lookup("Service", "ExecStopPost") == "-/usr/bin/podman rm -v -f -i web"
    assert unit.lookup("X-Container", "Image") == "registry.example:5000/edge/web:prod"
    assert unit.lookup("Unit", "SourcePath") == str(app_dir / "web.container")
    assert "After=cache.service" in web  # Quadlet names in [Unit] become service names
    assert web.startswith("# Automatically generated by podman-system-generator\n#\n")


def test_autoupdate_local_and_default_container_name(app_dir: Path) -> None:
    result = quadlet.generate(False, dirs=[str(app_dir)])
    args = exec_start(result.units["cache.service"])
    assert ("--label", "io.containers.autoupdate=local") in list(itertools.pairwise(args))
    assert args[2:4] == ["--name", "systemd-%N"]
    assert ("--network", "host") in list(itertools.pairwise(args))


def test_volume_and_network_units_and_dependencies(app_dir: Path) -> None:
    result = quadlet.generate(False, dirs=[str(app_dir)])
    web = parse(result.units["web.service"], "web.service")
    requires = web.lookup_all("Unit", "Requires")
    after = web.lookup_all("Unit", "After")
    for svc in ("app-network.service", "data-volume.service"):
        assert svc in requires and svc in after
    assert "/srv/static" in web.lookup_all("Unit", "RequiresMountsFor")
    vol = parse(result.units["data-volume.service"], "v")
    assert vol.lookup("Service", "Type") == "oneshot"
    assert vol.lookup("Service", "RemainAfterExit") == "yes"
    script = exec_start(result.units["data-volume.service"])
    assert script[:2] == ["/bin/sh", "-c"]
    assert script[2] == ("/usr/bin/podman volume exists systemd-data || exec /usr/bin/podman "
                         "volume create --opt o=uid=1000,gid=1000 --label app=web systemd-data")
    net = exec_start(result.units["app-network.service"])[2]
    assert net.endswith("network create --subnet 10.89.0.0/24 --gateway 10.89.0.1 "
                        "--label app=web systemd-app")
    # the oneshot's shell command really is idempotent shell (podman 4.3.1 has no --ignore)
    assert subprocess.run(["sh", "-n", "-c", net], timeout=10).returncode == 0


def test_unknown_key_refused_with_file_and_line(app_dir: Path, tmp_path: Path) -> None:
    (app_dir / "bad.container").write_text("[Container]\nImage=x\n\n# typo below\n"
                                           "Imagee=y\n")
    out = tmp_path / "gen"
    proc = run_generator([app_dir], out)
    assert proc.returncode == 1
    assert f"{app_dir}/bad.container:5: unsupported key 'Imagee' in group 'Container'" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    # the other files are still generated, the bad one is skipped
    assert (out / "web.service").exists() and not (out / "bad.service").exists()


@pytest.mark.parametrize(("text", "expect"), [
    ("[Container]\nImage=x\nNotify=healthy\n", "bad.container:3: Notify=healthy needs a newer"),
    ("[Container]\nImage=x\nMemory=1g\n", "bad.container:3: key 'Memory' in group 'Container' "
     "is not supported by atomicedge: containers run with cgroups disabled"),
    ("[Container]\nImage=x\nGroup=5\n", "bad.container:3: invalid Group set without User"),
    ("[Container]\nExec=true\n", "bad.container: no Image or Rootfs key specified"),
    ("[Container]\nImage=x\nVolume=nope.volume:/d\n",
     "bad.container:3: requested Quadlet source nope.volume was not found"),
    ("[Container]\nImage=x\n[Service]\nType=simple\n", "bad.container:4: invalid service Type"),
    ("[Container]\nImage=x\nthis is not a key\n", "bad.container:3: “this is not a key” is not"),
    ("Image=x\n", "bad.container:1: key 'Image' before any [group]"),
    ("[Quadlet]\nFoo=1\n[Container]\nImage=x\n", "bad.container:2: unsupported key 'Foo' in "
     "group 'Quadlet'"),
    ("[Container]\nImage=app.image\n", "bad.container:2: Image=app.image: .image and .build "
     "files are not supported"),
    ("[Container]\nImage=x\nExec=echo 'a\\.b'\n", "bad.container:3: unsupported escape \\."),
])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text: str, expect: str) -> None:
    d = write(tmp_path / "q", {"bad.container": text})
    result = quadlet.generate(False, dirs=[str(d)])
    assert result.units == {}
    assert len(result.errors) == 1 and expect in result.errors[0], result.errors


def test_dropin_overrides_and_names_its_own_line(tmp_path: Path) -> None:
    d = write(tmp_path / "q", {"web-app.container": "[Container]\nImage=a\n",
                               "container.d/10-env.conf": "[Container]\nEnvironment=X=1\n",
                               "web-.container.d/20-img.conf": "[Container]\nImage=b\n",
                               "web-app.container.d/30-bad.conf": "[Container]\n\nBogus=1\n"})
    result = quadlet.generate(False, dirs=[str(d)])
    assert result.errors and f"{d}/web-app.container.d/30-bad.conf:3: unsupported key " \
        "'Bogus'" in result.errors[0]
    (d / "web-app.container.d/30-bad.conf").unlink()
    args = exec_start(quadlet.generate(False, dirs=[str(d)]).units["web-app.service"])
    assert args[-1] == "b" and ("--env", "X=1") in list(itertools.pairwise(args))


def test_dryrun_prints_the_units_and_writes_nothing(app_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QUADLET_UNIT_DIRS", str(app_dir))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["quadlet", "--dryrun"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---app-network.service---\n")
    blocks = out.split("---web.service---\n")
    assert len(blocks) == 2 and "ExecStart=/usr/bin/podman run --name web" in blocks[1]
    assert sorted(os.listdir(tmp_path)) == ["quadlets"]
    # the generator's own -dryrun prints the same units
    gen = run_generator([app_dir], tmp_path / "unused", "-dryrun")
    assert gen.returncode == 0
    strip = [ln for ln in out.splitlines() if not ln.startswith("# Automatically")]
    assert strip == [ln for ln in gen.stdout.splitlines()
                     if not ln.startswith("# Automatically")]


def test_cli_reports_bad_file_and_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    d = write(tmp_path / "q", {"ok.container": CACHE, "bad.container": "[Container]\nImg=1\n"})
    monkeypatch.setenv("QUADLET_UNIT_DIRS", str(d))
    assert cli_main(["quadlet", "--dryrun"]) == 1
    cap = capsys.readouterr()
    assert "---ok.service---" in cap.out
    assert cap.err.strip() == (f"error: {d}/bad.container:2: unsupported key 'Img' in group "
                               "'Container' (hint: see docs/workloads.md for the keys "
                               "atomicedge's Quadlet supports)")


def test_quadlet_unit_dirs_limits_search_and_first_dir_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "a", {"app.container": "[Container]\nImage=first\n",
                                   "sub/deep.volume": "[Volume]\n"})
    second = write(tmp_path / "b", {"app.container": "[Container]\nImage=second\n",
                                    "other.network": "[Network]\n"})
    env = {"QUADLET_UNIT_DIRS": f"{first}:{second}"}
    dirs = quadlet.unit_dirs(False, env)
    assert dirs == [str(first), str(first / "sub"), str(second)]
    result = quadlet.generate(False, dirs=dirs)
    assert sorted(result.units) == ["app.service", "deep-volume.service", "other-network.service"]
    assert exec_start(result.units["app.service"])[-1] == "first"
    with pytest.raises(Exception, match="not an absolute path"):
        quadlet.unit_dirs(False, {"QUADLET_UNIT_DIRS": "relative/dir"})


def test_rootless_search_path_and_user_dependencies(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    dirs = quadlet.unit_dirs(True, env, uid=4242)
    assert dirs[:2] == [str(tmp_path / "run/containers/systemd"),
                        str(tmp_path / "home/.config/containers/systemd")]
    assert "/etc/containers/systemd/users/4242" in dirs
    assert "/etc/containers/systemd/users" in dirs
    assert all(d != "/etc/containers/systemd" for d in dirs)  # the system dir is not rootless
    assert "/etc/containers/systemd/users" not in quadlet.unit_dirs(False, {})
    d = write(tmp_path / "q", {"app.container": CACHE})
    unit = parse(quadlet.generate(True, dirs=[str(d)]).units["app.service"], "app.service")
    assert unit.lookup_all("Unit", "Wants") == ["podman-user-wait-network-online.service"]


def test_generated_user_unit_verifies_with_its_wait_unit(tmp_path: Path) -> None:
    d = write(tmp_path / "q", {"app.container": CACHE + "[Install]\nWantedBy=default.target\n"})
    out = tmp_path / "gen"
    quadlet.write_output(quadlet.generate(True, dirs=[str(d)]), str(out))
    from atomicedge.workload.install import FILES
    (out / "podman-user-wait-network-online.service").write_text(
        (FILES / "podman-user-wait-network-online.service").read_text())
    checked = verify(out, "app.service", "podman-user-wait-network-online.service", user=True)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    assert os.readlink(out / "default.target.wants/app.service") == "../app.service"


def test_template_default_instance_and_alias_symlinks(tmp_path: Path) -> None:
    d = write(tmp_path / "q", {"sleep@.container": "[Container]\nImage=x\nExec=sleep %i\n"
                               "[Install]\nWantedBy=multi-user.target\nDefaultInstance=100\n"
                               "Alias=nap@.service\n"})
    result = quadlet.generate(False, dirs=[str(d)])
    assert list(result.units) == ["sleep@.service"]
    assert result.symlinks == {"multi-user.target.wants/sleep@100.service": "../sleep@.service",
                               "nap@.service": "sleep@.service"}
    assert exec_start(result.units["sleep@.service"])[2:4] == ["--name", "systemd-%p_%i"]


def test_install_puts_generators_where_systemd_runs_them(tmp_path: Path) -> None:
    from atomicedge.workload.install import install_workload_files
    tree = tmp_path / "tree"
    (tree / "usr/etc").mkdir(parents=True)
    install_workload_files(tree)
    for rel, flag in (("usr/lib/systemd/system-generators/podman-system-generator", ""),
                      ("usr/lib/systemd/user-generators/podman-user-generator", "-user")):
        path = tree / rel
        assert path.stat().st_mode & 0o777 == 0o755
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n")
        assert f"exec /usr/bin/python3 -m atomicedge.workload.quadlet {flag}".replace("  ", " ") \
            in text
    assert (tree / "usr/lib/systemd/user/podman-user-wait-network-online.service").is_file()
    assert (tree / "usr/etc/containers/systemd/users").is_dir()


def test_podman_defaults_settings_and_subordinate_ids(tmp_path: Path) -> None:
    files = podman_defaults.podman_files(["core", "root", "app"],
                                         subuid="admin:100000:65536\n", subgid="")
    conf = tomllib.loads(files["containers/containers.conf"])
    assert conf["containers"]["keyring"] is False
    assert conf["containers"]["cgroups"] == "disabled"
    assert conf["containers"]["default_ulimits"] == ["nofile=1024:1024", "nproc=1024:1024"]
    assert conf["engine"] == {"runtime": "crun", "cgroup_manager": "cgroupfs"}
    assert files["subuid"] == ("admin:100000:65536\ncore:165536:65536\napp:231072:65536\n")
    assert files["subgid"] == "core:100000:65536\napp:165536:65536\n"
    # applied twice: nothing is added the second time
    tree = tmp_path / "t"
    (tree / "etc").mkdir(parents=True)
    podman_defaults.install_podman_defaults(tree, ["core"])
    podman_defaults.install_podman_defaults(tree, ["core"])
    assert (tree / "etc/subuid").read_text() == "core:100000:65536\n"
    (tree / "etc/subgid").write_text("garbage line\n")
    with pytest.raises(Exception, match=r"/etc/subgid:1: not a name:start:count line"):
        podman_defaults.install_podman_defaults(tree, ["core"])


def test_volume_ids_by_name_and_refused_image_driver(tmp_path: Path) -> None:
    d = write(tmp_path / "q", {"v.volume": "[Volume]\nUser=root\nGroup=0\nDevice=/dev/vda1\n"
                                           "Type=btrfs\nOptions=rw,compress=zstd\nCopy=no\n",
                               "i.volume": "[Volume]\nDriver=image\n",
                               "c.container": "[Container]\nImage=x\nCgroupsMode=no-conmon\n"})
    result = quadlet.generate(False, dirs=[str(d)])
    script = exec_start(result.units["v-volume.service"])[2]
    assert "volume create --opt nocopy --opt device=/dev/vda1 --opt type=btrfs --opt " \
        "o=uid=0,gid=0,rw,compress=zstd systemd-v" in script
    assert result.errors == [f"{d}/i.volume:2: Driver=image needs a newer podman than Debian "
                             "12's 4.3.1 (hint: mount the image's content with a container "
                             "instead)"]
    args = exec_start(result.units["c.service"])
    assert ("--cgroups", "no-conmon") in list(itertools.pairwise(args))  # explicit mode wins


def test_short_image_names_and_service_user_are_warnings_not_errors(tmp_path: Path) -> None:
    d = write(tmp_path / "q", {"a.container": "[Container]\nImage=busybox\n[Service]\nUser=x\n",
                               "b.container": "[Container]\nImage=localhost/bb:1\n",
                               "c.container": "[Container]\nImage=" + "ab" * 32 + "\n"})
    result = quadlet.generate(False, dirs=[str(d)])
    assert sorted(result.units) == ["a.service", "b.service", "c.service"]
    assert result.errors == []
    assert len(result.warnings) == 2
    assert "using key User in the Service group is not supported" in result.warnings[0]
    assert 'a.container specifies the image "busybox" which not a fully qualified' \
        in result.warnings[1]
