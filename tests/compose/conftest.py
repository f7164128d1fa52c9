"""Fixtures of the compose tests: the local apt repository and a private compose cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicedge.compose.mmdebstrap import unmount_below
from tests.compose import offline_repo


@pytest.fixture(scope="session")
def apt_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flat file:// repo: cached Debian minbase .debs + the test packages (see offline_repo)."""
    return offline_repo.build_repo(tmp_path_factory.mktemp("aptrepo") / "repo")


@pytest.fixture(scope="session")
def compose_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A compose cache of this test session only, so the first offline compose is cold."""
    root = tmp_path_factory.mktemp("compose-cache")
    yield root
    unmount_below(root)
