"""A pinned deployment survives a damaged origin file: its pin state is an error, not "no".

Before, ``Sysroot.is_pinned`` answered False for any origin it could not read, so
``cleanup -r`` or the next upgrade deleted a deployment the user had pinned.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from devhelpers import commit_tiny

from atomicedge.cli.main import main
from atomicedge.device import sysroot as sr
from atomicedge.ostree.repo import Repo


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


DAMAGE = {
    "stray-line": b"[origin]\nrefspec=origin:testos/stable\nthis is not a key\n"
                  b"[libostree-transient]\npinned=true\n",
    "not-utf8": b"[origin]\nrefspec=origin:testos/stable\n[libostree-transient]\npinned=\xff\n",
    "bad-boolean": b"[origin]\nrefspec=origin:testos/stable\n[libostree-transient]\npinned=yes"
                   b"please\n",
    "missing": b"",
}


@pytest.fixture
def pinned_rollback(tmp_path: Path) -> tuple[Path, Repo, str]:
    """A sysroot with v2 (default) and v1 (rollback, pinned)."""
    src = Repo.init(tmp_path / "src", "archive")
    commit_tiny(src, tmp_path, "1")
    s = tmp_path / "s"
    rc, _o, err = _cli("device", "install", "--sysroot", str(s), "--osname", "testos",
                       "--url", f"file://{src.path}", "--ref", "testos/stable")
    assert rc == 0, err
    commit_tiny(src, tmp_path, "2")
    assert _cli("device", "upgrade", "--sysroot", str(s))[0] == 0
    assert _cli("device", "pin", "1", "--sysroot", str(s))[0] == 0
    v1 = sr.Sysroot.open(s).deployments()[1]
    return s, src, v1.id


def _damage(s: Path, how: str) -> Path:
    sysroot = sr.Sysroot.open(s)
    path = sysroot.origin_path(sysroot.deployments()[1])
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(DAMAGE[how])
    return path


def _ids(s: Path) -> list[str]:
    return [d.id for d in sr.Sysroot.open(s).deployments()]


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_cleanup_never_deletes_a_deployment_whose_pin_state_is_unreadable(
        pinned_rollback: tuple[Path, Repo, str], how: str) -> None:
    s, _src, pinned_id = pinned_rollback
    origin = _damage(s, how)
    before = _ids(s)
    rc, _out, err = _cli("device", "cleanup", "-r", "--sysroot", str(s))
    assert rc != 0 and "Traceback" not in err and err.count("\n") == 1, err
    assert "pinned" in err and origin.name in err and pinned_id in err
    assert _ids(s) == before and pinned_id in before
    assert sr.Sysroot.open(s).deployment_dir(sr.Sysroot.open(s).deployments()[1]).is_dir()


@pytest.mark.parametrize("how", ["stray-line", "missing"])
def test_upgrade_refuses_to_drop_a_deployment_whose_pin_state_is_unreadable(
        pinned_rollback: tuple[Path, Repo, str], tmp_path: Path, how: str) -> None:
    s, src, _pinned_id = pinned_rollback
    _damage(s, how)
    commit_tiny(src, tmp_path, "3")
    before = _ids(s)
    rc, _out, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc != 0 and "pinned" in err and "Traceback" not in err, err
    assert _ids(s) == before


def test_status_still_lists_a_deployment_with_a_damaged_origin(
        pinned_rollback: tuple[Path, Repo, str]) -> None:
    s, _src, pinned_id = pinned_rollback
    _damage(s, "stray-line")
    rc, out, err = _cli("device", "status", "--json", "--sysroot", str(s))
    assert rc == 0, err
    deps = json.loads(out)["deployments"]
    assert [(d["id"], d["pinned"]) for d in deps][1] == (pinned_id, None)
    rc, out, _err = _cli("device", "status", "--sysroot", str(s))
    assert rc == 0 and "pin state unknown" in out
