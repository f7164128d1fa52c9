"""A failed outside tool's own words reach the user: the CLI prints the tail of its stderr
(indented) before the one ``error:`` line, as the hints ("see the output above") promise."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.cli.main import main
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, err.getvalue()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo.init(tmp_path / "repo", "archive")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("x\n")
    commit_directory(r, tmp_path / "tree", branch="main", subject="s")
    return r


@pytest.fixture
def empty_gnupg_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


def test_real_gpg_failure_shows_gpgs_own_lines_above_the_error(
        repo: Repo, empty_gnupg_home: Path) -> None:
    rc, err = _cli("repo", "gpg-sign", "--repo", str(repo.path), "--gpg-homedir",
                   str(empty_gnupg_home), "main", "0123456789ABCDEF")
    lines = err.splitlines()
    assert rc != 0 and lines[-1].startswith("error: ") and "Traceback" not in err
    tool_lines = lines[:-1]
    assert tool_lines and all(ln.startswith("    gpg: ") for ln in tool_lines), err
    assert any("No secret key" in ln or "0123456789ABCDEF" in ln for ln in tool_lines), err


def test_long_tool_output_is_cut_to_its_last_lines(repo: Repo, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # stand-in gpg: the real one cannot be made to print 50 lines of diagnostics on demand
    fake = tmp_path / "bin" / "gpg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nfor i in $(seq 1 50); do echo \"gpg: diag $i\" >&2; done\n"
                    "exit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    rc, err = _cli("repo", "gpg-sign", "--repo", str(repo.path), "--gpg-homedir",
                   str(tmp_path), "main", "0123456789ABCDEF")
    lines = err.splitlines()
    assert rc != 0 and lines[-1].startswith("error: gpg failed")
    shown = [ln for ln in lines if ln.startswith("    gpg: diag ")]
    assert shown == [f"    gpg: diag {i}" for i in range(31, 51)]  # the last 20
    assert "30 earlier lines" in err


def test_errors_without_tool_output_stay_one_line(repo: Repo) -> None:
    rc, err = _cli("repo", "gpg-sign", "--repo", str(repo.path), "no/such/ref", "KEY")
    assert rc != 0 and err.count("\n") == 1 and err.startswith("error: ")
