"""Fixtures for the device tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicedge.device import sysroot as sr


@pytest.fixture
def tiny_sysroot(tmp_path: Path) -> tuple[sr.Sysroot, Path]:
    s = sr.init_fs(tmp_path / "sysroot")
    sr.os_init(s, "testos")
    return s, tmp_path

