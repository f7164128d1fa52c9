"""The pull client as a device runs it: Debian 12's own python3 with Debian's packages only
(python3-urllib3 1.26, python3-nacl, python3-rich; no isal, no bsdiff4, no aiohttp), not
the venv. A real HTTP pull from ``atomicedge repo serve`` (objects, then an update through a
static delta with the summary revalidated by a conditional GET), judged by real
``ostree fsck``. Any urllib3-2-only API on those paths breaks these pulls."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from net_helpers import make_tree, ostree_fsck, run

from atomicedge.delta import generate as delta
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum

DEBIAN_PYTHON = "/usr/bin/python3"
SRC = Path(__file__).resolve().parents[2] / "src"


def _debian_env(home: Path) -> dict[str, str]:
    """Only our source tree on top of Debian's python3 and its dist-packages."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(SRC), "HOME": str(home),
            "LANG": "C.UTF-8"}


def _debian(home: Path, *args: str) -> str:
    proc = subprocess.run([DEBIAN_PYTHON, "-s", "-m", "atomicedge.cli.main", *args],
                          env=_debian_env(home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class _Served:
    """``atomicedge repo serve --port 0`` in its own process (stopped by PID); collects the
    request lines it logs."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atomicedge.cli.main", "repo", "serve", "--repo", str(repo),
             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # "serving REPO on URL (stats at ...)"
        assert " on http://" in first, first
        self.url = first.split(" on ", 1)[1].split()[0]
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=20)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[_Served, str, str]]:
    """v1 and v2 of a small tree, a static delta v1 -> v2 and a summary, served."""
    tree = make_tree(tmp_path / "tree")
    repo = Repo.init(tmp_path / "src", "archive")
    v1 = commit_directory(repo, tree, branch="main", subject="v1", generate_sizes=True)
    make_tree(tree, 2)
    v2 = commit_directory(repo, tree, branch="main", subject="v2", generate_sizes=True)
    delta.generate(repo, v1, v2)
    pubsum.update(repo)
    srv = _Served(repo.path)
    try:
        yield srv, v1, v2
    finally:
        srv.stop()


def test_debian_python_runs_the_client_with_debian_packages_only(tmp_path: Path) -> None:
    """The interpreter the pulls below run on really is Debian's, with urllib3 1.26 and
    without the venv's extras (so content inflates through zlib, deltas without bsdiff4)."""
    probe = ("import importlib.util as u, json, urllib3, nacl, rich\n"
             "import atomicedge.ostree.content as c, atomicedge.remote.pull\n"
             "print(json.dumps({'urllib3': urllib3.__version__, 'at': urllib3.__file__,\n"
             " 'zlib': c.fast_zlib.__name__, 'missing': [m for m in\n"
             " ('isal', 'bsdiff4', 'aiohttp') if u.find_spec(m) is None]}))")
    out = subprocess.run([DEBIAN_PYTHON, "-s", "-c", probe], env=_debian_env(tmp_path),
                         capture_output=True, text=True, timeout=120, check=True).stdout
    info = json.loads(out)
    assert info["urllib3"].startswith("1.26."), info
    assert info["at"].startswith("/usr/lib/python3/dist-packages/"), info
    assert info["zlib"] == "zlib" and info["missing"] == ["isal", "bsdiff4", "aiohttp"], info


def test_pull_and_delta_update_over_http_on_debian_python(
        tmp_path: Path, served: tuple[_Served, str, str]) -> None:
    srv, v1, v2 = served
    dst = tmp_path / "device-repo"
    _debian(tmp_path, "repo", "init", "--repo", str(dst), "--mode", "bare-user")
    _debian(tmp_path, "repo", "remote", "add", "--repo", str(dst), "--no-gpg-verify",
            "origin", srv.url)
    first = json.loads(_debian(tmp_path, "repo", "pull", "--repo", str(dst), "--json",
                               "origin", f"main@{v1}"))
    assert first["refs"] == {"main": v1} and first["deltas"] == [] and first["content"] > 30
    ostree_fsck(dst)
    update = json.loads(_debian(tmp_path, "repo", "pull", "--repo", str(dst), "--json",
                                "origin", "main"))
    assert update["refs"] == {"main": v2} and update["deltas"] == [f"{v1}-{v2}"], update
    assert update["bytes"] < first["bytes"]
    out = ostree_fsck(dst)
    assert "no errors" in out or "successfully" in out, out
    assert run("ostree", f"--repo={dst}", "rev-parse", "origin:main").stdout.strip() == v2
    # polling again: the cached summary is revalidated (304), nothing else is fetched
    again = json.loads(_debian(tmp_path, "repo", "pull", "--repo", str(dst), "--json",
                               "origin", "main"))
    assert again["refs"] == {"main": v2} and again["metadata"] == again["content"] == 0
    assert (dst / "tmp/cache/summaries/origin").is_file()
    assert any(line.startswith("GET /summary 304") for line in srv.lines), srv.lines
