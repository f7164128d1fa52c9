"""Suite-wide rules: in CI (CI=true) a skipped test is a failure, never a silent pass."""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (skips count as failures): {report.longrepr}"


@pytest.fixture(scope="session")
def gateway_images(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The gateway v1 and v2 edge images composed from examples/ (see tests/images.py)."""
    from tests.images import shared_gateway
    return shared_gateway(tmp_path_factory.mktemp("gateway"))
