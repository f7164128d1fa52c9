"""Bad input: one line naming the problem, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from atomicedge.ostree.commit import parse_timestamp
from atomicedge.ostree.repo import Repo

CLI = [sys.executable, "-m", "atomicedge.cli.main", "repo"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], proc.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    Repo.init(tmp_path / "repo", "archive")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("a")
    assert run("commit", "--repo", str(tmp_path / "repo"), "-b", "main", str(tree)).returncode == 0
    return tmp_path / "repo"


def test_missing_repo_is_named(tmp_path: Path) -> None:
    assert_one_line_error(run("log", "--repo", str(tmp_path / "nope"), "main"), "nope",
                          "does not exist")


def test_directory_that_is_not_a_repo(tmp_path: Path) -> None:
    assert_one_line_error(run("refs", "--repo", str(tmp_path)), "not an OSTree repository")


def test_unknown_mode_lists_valid_ones(tmp_path: Path) -> None:
    proc = run("init", "--repo", str(tmp_path / "r"), "--mode", "zip")
    assert_one_line_error(proc, "zip", "archive")
    assert not (tmp_path / "r").exists()


def test_reinit_with_other_mode_refused(repo: Path) -> None:
    assert_one_line_error(run("init", "--repo", str(repo), "--mode", "bare"), "archive")


def test_unknown_ref(repo: Path) -> None:
    assert_one_line_error(run("show", "--repo", str(repo), "nosuchref"), "nosuchref")
    assert_one_line_error(run("checkout", "--repo", str(repo), "main^", str(repo.parent / "x")),
                          "no parent")
    assert not (repo.parent / "x").exists()


def test_invalid_ref_name_refused_before_work(repo: Path, tmp_path: Path) -> None:
    proc = run("commit", "--repo", str(repo), "-b", "bad..//ref", str(tmp_path / "tree"))
    assert_one_line_error(proc, "invalid ref name")


def test_file_instead_of_directory(repo: Path, tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert_one_line_error(run("commit", "--repo", str(repo), "-b", "main", str(f)),
                          "not a directory")
    assert_one_line_error(run("commit", "--repo", str(f), "-b", "main", str(tmp_path)),
                          "not an OSTree repository")


def test_non_utf8_name_is_named_and_nothing_moves(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "bad"
    tree.mkdir()
    (tree / "ok").write_text("fine")
    open(os.path.join(os.fsencode(tree), b"caf\xe9"), "w").close()
    before = Repo.open(repo).read_ref("main")
    proc = run("commit", "--repo", str(repo), "-b", "main", str(tree))
    assert_one_line_error(proc, "not valid UTF-8", "caf")
    assert Repo.open(repo).read_ref("main") == before


def test_special_files_error_or_skip(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "special"
    tree.mkdir()
    (tree / "ok").write_text("fine")
    os.mkfifo(tree / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "sock"))
    try:
        assert_one_line_error(run("commit", "--repo", str(repo), "-b", "main", str(tree)),
                              "pipe", "fifo", "--skip-special")
        ok = run("commit", "--repo", str(repo), "-b", "main", "--skip-special", str(tree))
        assert ok.returncode == 0
        listing = run("ls", "--repo", str(repo), "main").stdout
        assert "/ok" in listing and "pipe" not in listing and "sock" not in listing
    finally:
        sock.close()


def test_corrupt_config_is_a_clear_error(repo: Path) -> None:
    (repo / "config").write_text("[core]\nthis is not a key\n")
    assert_one_line_error(run("refs", "--repo", str(repo)), "config:2")


def test_bad_timestamp_and_metadata(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    assert_one_line_error(run("commit", "--repo", str(repo), "-b", "main", "--timestamp",
                              "yesterday", str(tree)), "yesterday", "ISO 8601")
    assert_one_line_error(run("commit", "--repo", str(repo), "-b", "main",
                              "--add-metadata-string", "novalue", str(tree)), "KEY=VALUE")


@pytest.mark.parametrize("text,epoch", [("@0", 0), ("@1700000000", 1700000000),
                                        ("2020-01-01T00:00:00Z", 1577836800),
                                        ("2020-01-01 01:00:00+01:00", 1577836800),
                                        ("2020-01-01", 1577836800)])
def test_timestamp_formats_like_ostree(text: str, epoch: int) -> None:
    assert parse_timestamp(text) == epoch
