"""Remotes with a ``contenturl`` (content from a CDN, metadata from the origin) and with
``mirrorlist=`` URLs, in ostree's config syntax, read the same way by real ostree."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from net_helpers import StaticServer, ostree_client, ostree_fsck, run

from atomicedge.cli.main import main
from atomicedge.errors import UsageError
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from atomicedge.publish.serve import Server
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import pull


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_contenturl_serves_content_and_url_serves_metadata(
        tmp_path: Path, src_repo: tuple[Repo, str]) -> None:
    repo, csum = src_repo
    with Server(repo.path) as origin, Server(repo.path) as cdn:
        dst = Repo.init(tmp_path / "d", "bare-user")
        assert main(["repo", "remote", "add", "--repo", str(dst.path), "--no-gpg-verify",
                     "--set", f"contenturl={cdn.url}", "origin", origin.url]) == 0
        res = pull(Repo.open(dst.path), "origin", ["main"])
        content = res.stats.content_fetched
        assert content > 0 and cdn.stats.files == content  # nothing but .filez from the CDN
        assert origin.stats.files >= res.stats.metadata_fetched
        assert res.stats.bytes == origin.stats.bytes + cdn.stats.bytes
    assert Repo.open(dst.path).read_ref("origin:main") == csum
    ostree_fsck(dst.path)


def test_real_ostree_honours_the_contenturl_we_configure(
        tmp_path: Path, src_repo: tuple[Repo, str]) -> None:
    repo, csum = src_repo
    with Server(repo.path) as origin, Server(repo.path) as cdn:
        client = ostree_client(tmp_path / "c", origin.url, "--no-gpg-verify")
        run("ostree", f"--repo={client}", "remote", "delete", "origin")
        assert main(["repo", "remote", "add", "--repo", str(client), "--no-gpg-verify",
                     "--set", f"contenturl={cdn.url}", "origin", origin.url]) == 0
        run("ostree", f"--repo={client}", "pull", "origin", "main")
        assert cdn.stats.files > 0  # ostree took its content from the CDN too
    assert run("ostree", f"--repo={client}", "rev-parse", "origin:main").stdout.strip() == csum


def test_mirrorlist_skips_a_dead_and_a_lagging_mirror(tmp_path: Path,
                                                      src_repo: tuple[Repo, str]) -> None:
    repo, csum = src_repo
    lagging = Repo.init(tmp_path / "lagging", "archive")  # has nothing yet: 404s
    lists = tmp_path / "lists"
    lists.mkdir()
    with Server(lagging.path) as lag, Server(repo.path) as good, StaticServer(lists) as web:
        (lists / "mirrors.txt").write_text(
            f"# our mirrors\n{_dead_url()}\n\n{lag.url}\n{good.url}\n")
        dst = Repo.init(tmp_path / "d", "bare-user")
        remotes.add(dst, "origin", f"mirrorlist={web.url}/mirrors.txt", gpg_verify=False)
        res = pull(Repo.open(dst.path), "origin", ["main"], backoff=0.0)
        assert good.stats.files > 0
        total = len(reachable(repo, csum))
        assert res.stats.metadata_fetched + res.stats.content_fetched == total
    assert Repo.open(dst.path).read_ref("origin:main") == csum
    ostree_fsck(dst.path)


@pytest.mark.parametrize("listing, problem", [
    ("", "lists no mirrors"),
    ("# only a comment\n", "lists no mirrors"),
    ("http://ok.example/repo\nftp://old.example/repo\n", "line 2"),
])
def test_bad_mirrorlist_is_refused_with_the_line(tmp_path: Path, listing: str,
                                                 problem: str) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "mirrors.txt").write_text(listing)
    dst = Repo.init(tmp_path / "d", "bare-user")
    with StaticServer(lists) as web:
        remotes.add(dst, "origin", f"mirrorlist={web.url}/mirrors.txt", gpg_verify=False)
        with pytest.raises(UsageError, match=problem):
            pull(Repo.open(dst.path), "origin", ["main"])
    assert not any(dst.iter_objects())


def test_remote_add_refuses_a_bad_contenturl(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    dst = Repo.init(tmp_path / "d", "bare-user")
    assert main(["repo", "remote", "add", "--repo", str(dst.path), "--set",
                 "contenturl=ftp://cdn.example/repo", "origin", "http://x.example/r"]) == 2
    assert "contenturl" in capsys.readouterr().err
    assert remotes.names(Repo.open(dst.path)) == []
