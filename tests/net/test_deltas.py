"""Static deltas: the real ostree reads and applies ours, we consume ostree's."""

from __future__ import annotations

from pathlib import Path

import pytest
from net_helpers import StaticServer, make_tree, ostree_client, ostree_commit, ostree_fsck, run

from atomicedge.cli.main import main
from atomicedge.delta import format as df
from atomicedge.delta import generate as delta
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server
from atomicedge.remote.pull import pull


def test_ostree_static_delta_show_reads_our_delta(two_commits: tuple[Repo, str, str]) -> None:
    repo, v1, v2 = two_commits
    res = delta.generate(repo, v1, v2)
    assert res.bsdiff >= 1  # the modified library travels as a binary diff
    out = run("ostree", f"--repo={repo.path}", "static-delta", "show", res.name).stdout
    assert f"From: {v1}" in out and f"To: {v2}" in out and "bspatch=" in out
    listed = run("ostree", f"--repo={repo.path}", "static-delta", "list").stdout
    assert res.name in listed


def test_ostree_apply_offline_applies_our_scratch_and_update_deltas(
        tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    repo, v1, v2 = two_commits
    scratch = delta.generate(repo, None, v1)
    update = delta.generate(repo, v1, v2)
    client = tmp_path / "client"
    run("ostree", "init", f"--repo={client}", "--mode=bare-user")
    for d in (scratch, update):
        run("ostree", f"--repo={client}", "static-delta", "apply-offline",
            str(d.path / "superblock"))
    out = ostree_fsck(client)
    assert "Verifying content integrity of 2 commit objects" in out, out
    for csum in (v1, v2):  # both commits arrived whole, as real ostree reads them
        run("ostree", f"--repo={client}", "show", csum)


def test_ostree_pull_uses_our_delta_from_our_server(tmp_path: Path,
                                                    two_commits: tuple[Repo, str, str]) -> None:
    repo, v1, v2 = two_commits
    delta.generate(repo, v1, v2)
    pubsum.update(repo)
    with Server(repo.path) as srv:
        client = ostree_client(tmp_path / "client", srv.url, "--no-gpg-verify")
        run("ostree", f"--repo={client}", "pull", "origin", f"main@{v1}")
        out = run("ostree", f"--repo={client}", "pull", "--require-static-deltas", "origin",
                  "main").stdout
    assert "delta part" in out
    ostree_fsck(client)
    assert run("ostree", f"--repo={client}", "rev-parse", "origin:main").stdout.strip() == v2


def test_our_pull_consumes_ostree_made_delta_on_a_plain_static_server(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    src = tmp_path / "ostree-src"
    run("ostree", "init", f"--repo={src}", "--mode=archive")
    v1 = ostree_commit(src, tree, "-s", "v1")
    make_tree(tree, 2)
    v2 = ostree_commit(src, tree, "-s", "v2")
    run("ostree", f"--repo={src}", "static-delta", "generate", "--from", v1, "--to", v2)
    run("ostree", f"--repo={src}", "static-delta", "generate", "--empty", "--to", v1)
    run("ostree", f"--repo={src}", "summary", "-u")
    dst = Repo.init(tmp_path / "dst", "bare-user")
    with StaticServer(src) as srv:
        first = pull(dst, srv.url, [f"main@{v1}"], require_static_deltas=True)
        second = pull(dst, srv.url, ["main"], require_static_deltas=True)
    assert first.stats.deltas == [v1]
    assert second.stats.deltas == [f"{v1}-{v2}"]
    assert second.stats.content_fetched == 0  # nothing beyond the delta
    assert dst.read_ref("main") == v2
    ostree_fsck(dst.path)


def test_our_update_pull_fetches_the_delta_and_no_loose_objects(
        tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    repo, v1, v2 = two_commits
    delta.generate(repo, v1, v2)
    pubsum.update(repo)
    dst = Repo.init(tmp_path / "dst", "bare-user")
    with Server(repo.path) as srv:
        pull(dst, srv.url, [f"main@{v1}"], disable_static_deltas=True)
        before = srv.stats.bytes
        res = pull(dst, srv.url, ["main"])
        served = srv.stats.bytes - before
    assert res.stats.deltas == [df.delta_name(v1, v2)]
    assert res.stats.content_fetched == 0 and res.stats.metadata_fetched == 1  # the commit
    assert res.stats.bytes == served
    part_bytes = sum(p.stat().st_size for p in delta.Path(repo.path / df.delta_relpath(v1, v2))
                     .iterdir())
    assert served < part_bytes + 20_000  # delta + summary/config/index, nothing else
    ostree_fsck(dst.path)


def test_cli_static_delta_verbs(tmp_path: Path, two_commits: tuple[Repo, str, str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    repo, v1, v2 = two_commits
    r = str(repo.path)
    assert main(["repo", "static-delta", "generate", "--repo", r, "--from", v1, "--to", v2,
                 "--min-fallback-size", "0"]) == 0
    assert main(["repo", "static-delta", "list", "--repo", r]) == 0
    assert f"{v1}-{v2}" in capsys.readouterr().out
    assert main(["repo", "static-delta", "show", "--repo", r, f"{v1}-{v2}"]) == 0
    client = Repo.init(tmp_path / "client", "bare-user")
    pull(client, f"file://{repo.path}", [f"main@{v1}"])
    sb = repo.path / df.delta_relpath(v1, v2) / "superblock"
    assert main(["repo", "static-delta", "apply-offline", "--repo", str(client.path),
                 str(sb)]) == 0
    assert client.has_object(v2, delta.ObjectType.COMMIT) and not client.is_partial(v2)
    assert main(["repo", "static-delta", "delete", "--repo", r, f"{v1}-{v2}"]) == 0
    assert main(["repo", "static-delta", "show", "--repo", r, f"{v1}-{v2}"]) == 1
    ostree_fsck(client.path)


def test_inline_delta_with_filename_is_self_contained(tmp_path: Path,
                                                      two_commits: tuple[Repo, str, str]
                                                      ) -> None:
    repo, v1, _v2 = two_commits
    out = tmp_path / "v1.delta"
    delta.generate(repo, None, v1, filename=out)
    client = tmp_path / "client"
    run("ostree", "init", f"--repo={client}", "--mode=bare-user")
    run("ostree", f"--repo={client}", "static-delta", "apply-offline", str(out))
    ostree_fsck(client)
    ours = Repo.init(tmp_path / "ours", "bare")
    assert delta.apply_offline(ours, out) == v1
    ostree_fsck(ours.path)
