"""FCC (Butane YAML, variant fcos) -> Ignition JSON: the seed 003 config, Debian's validator,
and bad configs refused with their YAML line. ignition-validate is Debian's real one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atomicedge.compose import butane
from atomicedge.errors import UsageError

DATA = Path(__file__).parent / "data"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHelloProvisioningTestKeyOnly core@example"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atomicedge.cli.main", "butane", *args],
                          capture_output=True, text=True, timeout=120)


def test_seed_003_fcc_becomes_the_expected_ignition_config() -> None:
    config, warnings = butane.convert((DATA / "hello.bu").read_text(), "hello.bu")
    unit = config["systemd"]["units"][0]
    assert warnings == []
    assert config["ignition"] == {"version": "3.3.0"}
    assert config["passwd"] == {"users": [{"name": "core", "sshAuthorizedKeys": [KEY],
                                           "groups": ["sudo"]}]}
    assert config["storage"] == {
        "directories": [{"path": "/var/lib/hello", "mode": 0o750}],
        "files": [{"path": "/etc/hello/motd", "mode": 0o640, "user": {"name": "core"},
                   "contents": {"source": "data:,Hello%20from%20Ignition%21%0A"}}],
        "links": [{"path": "/etc/hello/current", "target": "/etc/hello/motd"}]}
    assert unit["name"] == "hello.service" and unit["enabled"] is True
    assert "ExecStart=podman run -d --name hello-server -p 8080:8080" in unit["contents"]
    assert unit["contents"].endswith("[Install]\nWantedBy=multi-user.target\n")


def test_cli_output_passes_debians_ignition_validate(tmp_path: Path) -> None:
    out = tmp_path / "hello.ign"
    proc = run_cli(str(DATA / "hello.bu"), "-o", str(out), "--strict")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["passwd"]["users"][0]["name"] == "core"
    check = subprocess.run(["ignition-validate", str(out)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and check.stdout + check.stderr == ""


def test_the_seed_verbatim_fcos_1_0_0_gives_spec_3_0_0_and_validates() -> None:
    text = (DATA / "hello.bu").read_text().replace("version: 1.4.0", "version: 1.0.0")
    config, _ = butane.convert(text, "seed.bu")
    assert config["ignition"]["version"] == "3.0.0"
    butane.validate(json.dumps(config))


def test_fcos_1_5_0_gives_spec_3_4_0_and_validates() -> None:
    text = (DATA / "hello.bu").read_text().replace("version: 1.4.0", "version: 1.5.0")
    config, _ = butane.convert(text, "v15.bu")
    assert config["ignition"]["version"] == "3.4.0"
    butane.validate(json.dumps(config))


def test_validator_refuses_a_config_ignition_would_refuse() -> None:
    bad = {"ignition": {"version": "3.3.0"},
           "storage": {"files": [{"path": "relative/path", "mode": 420}]}}
    with pytest.raises(UsageError, match="ignition-validate refused"):
        butane.validate(json.dumps(bad))


def test_unknown_key_is_refused_with_its_line_and_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "bad.bu"
    src.write_text("variant: fcos\nversion: 1.4.0\npasswd:\n  users:\n    - name: core\n"
                   "      ssh_keys:\n        - ssh-rsa AAAA\n")
    out = tmp_path / "out.ign"
    proc = run_cli(str(src), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bad.bu:6: passwd.users.0.ssh_keys: unknown")
    assert "ssh_authorized_keys" in proc.stderr  # the hint lists what is supported
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(("text", "line", "what"), [
    ("variant: flatcar\nversion: 1.0.0\n", 1, "variant 'flatcar' is not supported"),
    ("variant: fcos\nversion: 9.9.9\n", 2, "fcos version '9.9.9' is not supported"),
    ("variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /a\n      mode: x\n",
     6, "must be an integer"),
    ("variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /etc/../x\n",
     5, "without '..'"),
    ("variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /a\n      contents:\n"
     "        inline: x\n        source: data:,y\n", 6, "source and inline are given together"),
    ("variant: fcos\nversion: 1.4.0\nsystemd:\n  units:\n    - name: x\n", 5,
     "unit name 'x' is invalid"),
    ("variant: fcos\nversion: 1.4.0\npasswd:\n  users: [\n", 5, "not valid YAML"),
    ("variant: fcos\nversion: 1.4.0\nkernel_arguments:\n  should_exist: [quiet]\n", 3,
     "unknown or unsupported key 'kernel_arguments'"),
])
def test_bad_configs_are_refused_with_their_line(text: str, line: int, what: str) -> None:
    with pytest.raises(UsageError) as err:
        butane.convert(text, "c.bu")
    assert str(err.value).startswith(f"c.bu:{line}:")
    assert what in str(err.value) and err.value.hint


def test_strict_turns_an_enabled_unit_without_install_section_into_an_error() -> None:
    text = ("variant: fcos\nversion: 1.4.0\nsystemd:\n  units:\n    - name: a.service\n"
            "      enabled: true\n      contents: \"[Service]\\nExecStart=/bin/true\\n\"\n")
    _, warnings = butane.convert(text, "w.bu")
    assert warnings and warnings[0].startswith("w.bu:5: systemd.units.0.name")
    with pytest.raises(UsageError, match="no \\[Install\\] section"):
        butane.convert(text, "w.bu", strict=True)


def test_local_contents_are_embedded_but_may_not_leave_the_files_dir(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "app.conf").write_bytes(b"\x00\xffbinary")
    (tmp_path / "secret").write_text("host secret")
    text = ("variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /etc/app.conf\n"
            "      contents:\n        local: {}\n")
    config, _ = butane.convert(text.format("app.conf"), "l.bu", files_dir=tmp_path / "files")
    assert config["storage"]["files"][0]["contents"]["source"] == "data:;base64,AP9iaW5hcnk="
    with pytest.raises(UsageError, match="leaves the files directory"):
        butane.convert(text.format("../secret"), "l.bu", files_dir=tmp_path / "files")
