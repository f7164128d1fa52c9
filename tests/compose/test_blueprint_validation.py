"""Malformed blueprints are refused before any side effect: every problem, its line, a hint.

Each corpus case goes through the real CLI (``atomicedge blueprints validate`` and ``compose
build``); the expectation names the field path and the line the problem must be reported on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.compose.blueprint import BlueprintError
from atomicedge.compose.validate import parse_text

HEAD = 'name = "gw"\nversion = "1.0.0"\n'

# (id, blueprint text, expected field path in the message, expected line)
CORPUS: list[tuple[str, str, str, int]] = [
    ("name-wrong-type", 'name = 5\n', "name", 1),
    ("name-missing", 'version = "1.0.0"\n', "name", 0),
    ("name-with-space", 'name = "my gw"\n', "name", 1),
    ("semver-two-parts", 'name = "gw"\nversion = "1.0"\n', "version", 2),
    ("semver-v-prefix", 'name = "gw"\nversion = "v1.2.3"\n', "version", 2),
    ("unknown-top-key", HEAD + '[[pakages]]\nname = "strace"\n', "pakages", 3),
    ("users-plural", HEAD + '[[customizations.users]]\nname = "admin"\n',
     "customizations.users", 3),
    ("port-slash", HEAD + '[customizations.firewall]\nports = ["8080/tcp"]\n',
     "customizations.firewall.ports", 4),
    ("port-too-big", HEAD + '[customizations.firewall]\nports = ["70000:tcp"]\n',
     "customizations.firewall.ports", 4),
    ("port-range-reversed", HEAD + '[customizations.firewall]\nports = ["200-100:udp"]\n',
     "customizations.firewall.ports", 4),
    ("port-not-list", HEAD + '[customizations.firewall]\nports = "8080:tcp"\n',
     "customizations.firewall.ports", 4),
    ("duplicate-user", HEAD + '[[customizations.user]]\nname = "admin"\n'
     '[[customizations.user]]\nname = "admin"\n', "customizations.user[1].name", 6),
    ("duplicate-uid", HEAD + '[[customizations.user]]\nname = "a"\nuid = 1000\n'
     '[[customizations.user]]\nname = "b"\nuid = 1000\n', "customizations.user[1].uid", 8),
    ("negative-uid", HEAD + '[[customizations.user]]\nname = "a"\nuid = -1\n',
     "customizations.user[0].uid", 5),
    ("user-groups-string", HEAD + '[[customizations.user]]\nname = "a"\ngroups = "wheel"\n',
     "customizations.user[0].groups", 5),
    ("file-relative", HEAD + '[[customizations.files]]\npath = "etc/motd"\n',
     "customizations.files[0].path", 4),
    ("file-under-usr", HEAD + '[[customizations.files]]\npath = "/usr/bin/tool"\n',
     "customizations.files[0].path", 4),
    ("dir-under-var", HEAD + '[[customizations.directories]]\npath = "/var/lib/app"\n',
     "customizations.directories[0].path", 4),
    ("file-managed-passwd", HEAD + '[[customizations.files]]\npath = "/etc/passwd"\n',
     "customizations.files[0].path", 4),
    ("file-dotdot", HEAD + '[[customizations.files]]\npath = "/etc/../usr/x"\n',
     "customizations.files[0].path", 4),
    ("file-mode-symbolic", HEAD + '[[customizations.files]]\npath = "/etc/x"\n'
     'mode = "rw-r--r--"\n', "customizations.files[0].mode", 5),
    ("file-mode-int", HEAD + '[[customizations.files]]\npath = "/etc/x"\nmode = 644\n',
     "customizations.files[0].mode", 5),
    ("file-uri", HEAD + '[[customizations.files]]\npath = "/etc/x"\n'
     'uri = "https://example.com/x"\n', "customizations.files[0].uri", 5),
    ("packages-as-table", HEAD + '[packages]\nname = "strace"\n', "packages", 3),
    ("package-without-name", HEAD + '[[packages]]\nversion = "1.*"\n', "packages[0]", 3),
    ("package-bad-name", HEAD + '[[packages]]\nname = "Foo_Bar"\n', "packages[0].name", 4),
    ("refused-filesystem", HEAD + '[[customizations.filesystem]]\nmountpoint = "/data"\n',
     "customizations.filesystem", 3),
    ("refused-installation-device", HEAD + '[customizations]\n'
     'installation_device = "/dev/vda"\n', "customizations.installation_device", 4),
    ("refused-containers", HEAD + '[[containers]]\nsource = "quay.io/x"\n', "containers", 3),
    ("refused-fips", HEAD + '[customizations]\nfips = true\n', "customizations.fips", 4),
    ("hostname-underscore", HEAD + '[customizations]\nhostname = "gw_1"\n',
     "customizations.hostname", 4),
    ("services-not-list", HEAD + '[customizations.services]\nenabled = "sshd"\n',
     "customizations.services.enabled", 4),
    ("service-enabled-and-masked", HEAD + '[customizations.services]\n'
     'enabled = ["a.service"]\nmasked = ["a.service"]\n', "customizations.services.enabled", 4),
    ("sshkey-unknown-user", HEAD + '[[customizations.sshkey]]\nuser = "bob"\n'
     'key = "ssh-ed25519 AAAA"\n', "customizations.sshkey[0].user", 4),
    ("unknown-distro", HEAD + 'distro = "fedora-41"\n', "distro", 3),
    ("toml-syntax", HEAD + '[customizations\nhostname = "x"\n', "<file>", 3),
    ("duplicate-gid", HEAD + '[[customizations.group]]\nname = "a"\ngid = 2000\n'
     '[[customizations.group]]\nname = "b"\ngid = 2000\n', "customizations.group[1].gid", 8),
    ("kernel-unknown-key", HEAD + '[customizations.kernel]\nappend_args = "quiet"\n',
     "customizations.kernel.append_args", 4),
    ("home-relative", HEAD + '[[customizations.user]]\nname = "a"\nhome = "home/a"\n',
     "customizations.user[0].home", 5),
]


@pytest.mark.parametrize(("case", "text", "path", "line"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_blueprint_is_refused_with_line_and_hint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str, path: str,
        line: int) -> None:
    bp = tmp_path / f"{case}.toml"
    bp.write_text(text)
    repo = tmp_path / "repo"
    assert main(["blueprints", "validate", str(bp)]) != 0
    assert main(["compose", "build", str(bp), "--repo", str(repo),
                 "--offline-repo", str(tmp_path)]) != 0
    assert not repo.exists(), "nothing may be written for a malformed blueprint"
    msg = capsys.readouterr().err
    assert "Traceback" not in msg
    problem = next((ln for ln in msg.splitlines() if f" {path}:" in ln), None)
    assert problem is not None, msg
    if line:
        assert f"line {line}: " in problem, problem
    assert "(hint: " in problem, problem


def test_corpus_has_at_least_25_cases() -> None:
    assert len(CORPUS) >= 25


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    text = ('name = "gw"\nversion = "1.0"\n'            # 2
            '[[packages]]\nname = "Bad_Name"\n'         # 4
            '[customizations]\nhostname = "a_b"\n'      # 6
            '[[customizations.users]]\nname = "x"\n'    # 7
            '[customizations.firewall]\nports = ["80/tcp"]\n'  # 10
            '[[customizations.files]]\npath = "/usr/x"\n')     # 12
    with pytest.raises(BlueprintError) as exc:
        parse_text(text, "many.toml")
    lines = [p.line for p in exc.value.problems]
    assert lines == [2, 4, 6, 7, 10, 12]
    assert "did you mean [[customizations.user]]?" in str(exc.value)


def test_json_blueprint_is_accepted_and_checked_like_toml() -> None:
    bp = parse_text('{"name": "gw", "version": "1.2.3", "packages": [{"name": "strace"}],\n'
                    ' "customizations": {"hostname": "gw-1"}}')
    assert bp.packages[0].name == "strace"
    with pytest.raises(BlueprintError) as exc:
        parse_text('{"name": "gw",\n "version": "1.2"}')
    assert exc.value.problems[0].line == 2


def test_inline_package_tables_get_their_line() -> None:
    with pytest.raises(BlueprintError) as exc:
        parse_text('name = "gw"\n\npackages = [{name = "ok"}, {name = "NO"}]\n')
    assert exc.value.problems[0].path == "packages[1].name"
    assert exc.value.problems[0].line == 3


def test_examples_validate(capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.toml"))
    assert examples
    assert main(["blueprints", "validate", *map(str, examples)]) == 0
