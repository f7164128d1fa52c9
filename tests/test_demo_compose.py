"""`make demo`'s act 2 goes through the composer service: a real ``atomicedge composer serve``
(unix socket in the act's workdir, one worker) composes v1 and v2 from the offline apt
repository with the test profile; v2's parent is v1 (resolved over HTTP from the act's repo,
as the seed serves it), the act prints composer-cli status lines and stops the server."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from atomicedge.compose.apt import Sources
from atomicedge.errors import AtomicEdgeError
from atomicedge.lab import demo_compose
from atomicedge.ostree.repo import Repo
from tests.compose import offline_repo

GATEWAY = """
name = "gateway"
description = "demo act 2 test gateway"
version = "{version}"

[[packages]]
name = "edge-hello"
{extra}
[customizations]
hostname = "gateway"

[customizations.kernel]
name = "edge-test-kernel"
"""


@pytest.fixture(scope="module")
def offline_sources() -> Sources:
    """The composer tests' offline repo and tree cache (shared, so later builds are warm)."""
    root = Path(os.environ.get("ATOMICEDGE_TEST_CACHE", "/var/tmp/atomicedge-cache")) \
        / "composer-tests"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    repo = root / "aptrepo" / "repo"
    if not (repo / "Release").exists():
        shutil.rmtree(repo.parent, ignore_errors=True)
        offline_repo.build_repo(repo)
    return Sources.offline(repo)


@pytest.fixture
def examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_sources: Sources) -> Path:
    cache = offline_sources.offline_dir
    assert cache is not None
    monkeypatch.setenv("ATOMICEDGE_CACHE", str(cache.parents[1]))
    ex = tmp_path / "examples"
    ex.mkdir()
    (ex / "gateway-v1.toml").write_text(GATEWAY.format(version="1.0.0", extra=""))
    (ex / "gateway-v2.toml").write_text(
        GATEWAY.format(version="1.1.0", extra='\n[[packages]]\nname = "edge-agent"\n'))
    return ex


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, highlight=False, color_system=None), out


def _servers_of(work: Path) -> list[int]:
    """PIDs of live processes whose command line names ``work`` (the act's server)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "composer serve" in cmd and str(work) in cmd:
            found.append(int(proc.name))
    return found


def test_act2_composes_v1_then_v2_with_v1_as_parent_through_the_composer_service(
        tmp_path: Path, examples: Path, offline_sources: Sources) -> None:
    console, out = _console()
    work = tmp_path / "compose"
    res = demo_compose.run(work, console, sources=offline_sources, profile="test",
                           examples=examples)
    text = out.getvalue()
    # composer-cli `compose status` rows: UUID, status, date, blueprint, version, type
    row = r"[0-9a-f-]{{36}} +{} +\w{{3}} \w{{3}} +\d+ [\d:]+ \d{{4}} gateway +{} +edge-commit"
    for version in ("1.0.0", "1.1.0"):
        assert re.search(row.format("FINISHED", version), text), text
    assert "blueprints push gateway-v1.toml" in text and "compose image" in text
    repo = Repo.open(Path(str(res["repo"])))
    ref = str(res["ref"])
    assert repo.resolve_rev(ref) == res["v2"]               # acts 3 and 4 read ref's tip
    assert repo.load_commit(str(res["v2"])).parent == res["v1"]   # act 4: v2's parent = v1
    assert repo.load_commit(str(res["v1"])).parent is None
    assert res["added"] == ["edge-agent"] and res["removed"] == []
    assert "edge-agent" in text.split("packages v1 -> v2", 1)[1]
    assert not _servers_of(work), "the act left its composer server running"
    assert not list(work.glob("composer-state-*")), "the temporary state dir is left"


def test_act2_stops_its_server_when_a_compose_is_refused(
        tmp_path: Path, examples: Path, offline_sources: Sources) -> None:
    (examples / "gateway-v1.toml").write_text(
        GATEWAY.format(version="1.0.0", extra='\n[[packages]]\nname = "no-such-package"\n'))
    console, _ = _console()
    work = tmp_path / "compose"
    with pytest.raises(AtomicEdgeError, match="no-such-package"):
        demo_compose.run(work, console, sources=offline_sources, profile="test",
                         examples=examples)
    assert not _servers_of(work), "the act left its composer server running"
    assert not list(work.glob("composer-state-*"))
