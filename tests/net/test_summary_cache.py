"""The client's summary cache: a device polling for updates revalidates the summary with a
conditional GET instead of downloading it again, in libostree's cache layout, so real
ostree and we reuse each other's copy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from net_helpers import make_tree, ostree_client, run

from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import PullResult, pull
from atomicedge.remote.summary_cache import CACHE_DIR
from atomicedge.trust import gpg


def _requests(capsys: pytest.CaptureFixture[str], *expected: str) -> list[str]:
    """``GET /path STATUS`` for each request the server logged since the last call.

    The server logs a file reply once its head is out, so a client can have its answer
    (a 304) a moment before the line exists: this polls until every ``expected`` line is
    there (generous deadline; the caller's assertions then judge what was logged).
    """
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        lines += [" ".join(line.split()[:3]) for line in capsys.readouterr().out.splitlines()
                  if line.startswith("GET ")]
        if all(e in lines for e in expected) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def _sign(repo: Repo, gpg_keys: tuple[Path, str, Path]) -> None:
    home, key, _pub = gpg_keys
    pubsum.update(repo, sign_opts=pubsum.SignOptions(gpg_key_ids=[key], gpg_homedir=home))


def _client(path: Path, url: str) -> Repo:
    repo = Repo.init(path, "bare-user")
    remotes.add(repo, "origin", url, gpg_verify=False)
    return Repo.open(path)


def _pull_twice(repo: Repo, path: Path, capsys: pytest.CaptureFixture[str],
                expect: tuple[str, ...], between: Callable[[], object] = lambda: None
                ) -> tuple[Repo, list[str], list[str], PullResult]:
    """Two pulls of ``main`` from a logging server: the client, the requests each made
    (the second once ``expect`` are logged), and the second pull's result (``between``
    runs on the server side in between)."""
    with Server(repo.path, quiet=False) as srv:
        dst = _client(path, srv.url)
        pull(dst, "origin", ["main"])
        first = _requests(capsys, "GET /summary 200")
        between()
        res = pull(dst, "origin", ["main"])
        return dst, first, _requests(capsys, *expect), res


def test_unchanged_signed_summary_is_revalidated_not_downloaded(
        tmp_path: Path, src_repo: tuple[Repo, str], gpg_keys: tuple[Path, str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    repo, _csum = src_repo
    _sign(repo, gpg_keys)
    dst, first, second, _res = _pull_twice(repo, tmp_path / "d", capsys,
                                           ("GET /summary.sig 304",))
    assert "GET /summary 200" in first
    assert "GET /summary.sig 304" in second
    assert not any(r.startswith("GET /summary ") for r in second), second
    cached = dst.path / CACHE_DIR / "origin"
    assert cached.read_bytes() == (repo.path / "summary").read_bytes()


def test_unsigned_summary_is_revalidated_by_its_own_etag(
        tmp_path: Path, src_repo: tuple[Repo, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Beyond ostree 2022.7, which downloads an unsigned summary on every pull."""
    repo, _csum = src_repo
    _dst, _first, second, _res = _pull_twice(repo, tmp_path / "d", capsys,
                                             ("GET /summary 304",))
    assert "GET /summary.sig 404" in second and "GET /summary 304" in second


def test_a_new_publication_replaces_the_cached_copy(
        tmp_path: Path, src_repo: tuple[Repo, str], gpg_keys: tuple[Path, str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    repo, _csum = src_repo
    _sign(repo, gpg_keys)
    commits: list[str] = []

    def publish_v2() -> None:
        commits.append(commit_directory(repo, make_tree(tmp_path / "v2", 2), branch="main",
                                        subject="v2"))
        _sign(repo, gpg_keys)

    dst, _first, second, res = _pull_twice(repo, tmp_path / "d", capsys,
                                           ("GET /summary 200",), publish_v2)
    assert res.refs["main"] == commits[0]
    assert "GET /summary.sig 200" in second and "GET /summary 200" in second
    assert (dst.path / CACHE_DIR / "origin").read_bytes() == \
        (repo.path / "summary").read_bytes()


def test_a_damaged_or_forged_cached_summary_is_never_trusted(
        tmp_path: Path, src_repo: tuple[Repo, str], gpg_keys: tuple[Path, str, Path]
        ) -> None:
    """Junk in the cache is ignored; a parseable summary that does not match the cached
    signature (with verification on) is dropped and the real one downloaded."""
    repo, csum = src_repo
    _sign(repo, gpg_keys)
    other = Repo.init(tmp_path / "other", "archive")
    commit_directory(other, make_tree(tmp_path / "o", 3), branch="main", subject="forged")
    pubsum.update(other)
    with Server(repo.path) as srv:
        dst = _client(tmp_path / "d", srv.url)
        dst.config.set('remote "origin"', "gpg-verify-summary", "true")
        dst.write_config()
        gpg.import_to_keyring(dst.path / "origin.trustedkeys.gpg", gpg_keys[2].read_bytes())
        dst = Repo.open(dst.path)
        pull(dst, "origin", ["main"])
        cached = dst.path / CACHE_DIR / "origin"
        for planted in (b"junk", (other.path / "summary").read_bytes()):
            cached.write_bytes(planted)
            assert pull(dst, "origin", ["main"]).refs["main"] == csum
            assert cached.read_bytes() == (repo.path / "summary").read_bytes()


def test_ostree_and_we_reuse_each_others_cached_summary(
        tmp_path: Path, src_repo: tuple[Repo, str], gpg_keys: tuple[Path, str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    repo, _csum = src_repo
    _sign(repo, gpg_keys)
    with Server(repo.path, quiet=False) as srv:
        ours_first = ostree_client(tmp_path / "a", srv.url, "--no-gpg-verify")
        pull(Repo.open(ours_first), "origin", ["main"])
        _requests(capsys, "GET /summary 200")
        run("ostree", f"--repo={ours_first}", "pull", "origin", "main")
        by_ostree = _requests(capsys, "GET /summary.sig 304")
        theirs_first = ostree_client(tmp_path / "b", srv.url, "--no-gpg-verify")
        run("ostree", f"--repo={theirs_first}", "pull", "origin", "main")
        _requests(capsys, "GET /summary 200")
        pull(Repo.open(theirs_first), "origin", ["main"])
        by_us = _requests(capsys, "GET /summary.sig 304")
    for reqs in (by_ostree, by_us):
        assert "GET /summary.sig 304" in reqs, reqs
        assert not any(r.startswith("GET /summary ") for r in reqs), reqs
