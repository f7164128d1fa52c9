"""Fixtures for the network tests: ostree-made repos, our repos, running servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from net_helpers import make_tree, run, stop_gpg_agent

from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo
from atomicedge.publish.serve import Server
from atomicedge.trust import gpg


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def src_repo(tmp_path: Path, tree: Path) -> tuple[Repo, str]:
    """An archive repo written by atomicedge with one commit on ``main`` and a summary."""
    from atomicedge.publish import summary as pubsum
    repo = Repo.init(tmp_path / "src", "archive")
    csum = commit_directory(repo, tree, branch="main", subject="v1", generate_sizes=True)
    pubsum.update(repo)
    return repo, csum


@pytest.fixture
def ostree_repo(tmp_path: Path, tree: Path) -> tuple[Path, str]:
    """An archive repo written by the real ostree, with a summary."""
    path = tmp_path / "ostree-src"
    run("ostree", "init", f"--repo={path}", "--mode=archive")
    run("ostree", f"--repo={path}", "commit", "-b", "main", "-s", "v1", "--generate-sizes",
        str(tree))
    run("ostree", f"--repo={path}", "summary", "-u")
    csum = run("ostree", f"--repo={path}", "rev-parse", "main").stdout.strip()
    return path, csum


@pytest.fixture
def server(src_repo: tuple[Repo, str]) -> Iterator[Server]:
    with Server(src_repo[0].path) as s:
        yield s


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    """(gnupg home, key id, exported public key file) of a throw-away signing key."""
    home = tmp_path_factory.mktemp("gnupg")
    key = gpg.generate_test_key(home, "atomicedge test")
    pub = home / "pub.gpg"
    pub.write_bytes(gpg.export_keys(home, [key]))
    yield home, key, pub
    stop_gpg_agent(home)


@pytest.fixture
def two_commits(tmp_path: Path) -> tuple[Repo, str, str]:
    """An archive repo with v1 and v2 (one file changed, others added) on ``main``."""
    tree = make_tree(tmp_path / "tree")
    repo = Repo.init(tmp_path / "src", "archive")
    v1 = commit_directory(repo, tree, branch="main", subject="v1", generate_sizes=True)
    make_tree(tree, 2)
    v2 = commit_directory(repo, tree, branch="main", subject="v2", generate_sizes=True)
    return repo, v1, v2
