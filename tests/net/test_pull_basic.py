"""Pull over file:// and http:// into every mode; the real ostree judges the result."""

from __future__ import annotations

from pathlib import Path

import pytest
from net_helpers import ostree_fsck, run

from atomicedge.errors import CorruptionError
from atomicedge.ostree.repo import Repo
from atomicedge.publish.serve import Server
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import pull


@pytest.mark.parametrize("mode", ["archive", "bare-user", "bare"])
def test_pull_over_http_into_each_mode_passes_ostree_fsck(tmp_path: Path, server: Server,
                                                          src_repo: tuple[Repo, str],
                                                          mode: str) -> None:
    dst = Repo.init(tmp_path / "dst", mode)
    res = pull(dst, server.url, ["main"])
    assert res.refs == {"main": src_repo[1]}
    assert dst.read_ref("main") == src_repo[1]
    assert not dst.is_partial(src_repo[1])
    ostree_fsck(dst.path)


def test_pull_over_file_url_from_an_ostree_made_repo(tmp_path: Path,
                                                     ostree_repo: tuple[Path, str]) -> None:
    dst = Repo.init(tmp_path / "dst", "bare-user")
    remotes.add(dst, "origin", f"file://{ostree_repo[0]}", gpg_verify=False)
    res = pull(dst, "origin", ["main"])
    assert dst.read_ref("origin:main") == ostree_repo[1] == res.refs["main"]
    ostree_fsck(dst.path)
    # real ostree checks out what we pulled, and it is the tree ostree itself committed
    for repo, out in ((dst.path, "co"), (ostree_repo[0], "co-src")):
        co = run("ostree", f"--repo={repo}", "checkout", "-U", ostree_repo[1],
                 str(tmp_path / out), check=False)
        assert co.returncode == 0, co.stderr
    assert _listing(tmp_path / "co") == _listing(tmp_path / "co-src") != {}


def _listing(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below ``root`` with its mode and content (or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = str(p.readlink()).encode() if p.is_symlink() else (
            p.read_bytes() if p.is_file() else b"")
        out[str(p.relative_to(root))] = (st.st_mode, data)
    return out


def test_second_pull_downloads_nothing_new(tmp_path: Path, server: Server) -> None:
    dst = Repo.init(tmp_path / "dst", "bare-user")
    pull(dst, server.url, ["main"])
    res = pull(dst, server.url, ["main"])
    assert res.stats.content_fetched == 0 and res.stats.metadata_fetched == 0


def test_pull_of_pinned_commit_without_summary(tmp_path: Path, src_repo: tuple[Repo, str]
                                               ) -> None:
    (src_repo[0].path / "summary").unlink()
    dst = Repo.init(tmp_path / "dst", "archive")
    res = pull(dst, f"file://{src_repo[0].path}", [f"main@{src_repo[1]}"])
    assert res.refs["main"] == src_repo[1]
    ostree_fsck(dst.path)


def test_tampered_content_object_is_refused_and_not_stored(tmp_path: Path,
                                                           src_repo: tuple[Repo, str]) -> None:
    repo, _csum = src_repo
    victim = max(repo.objects.rglob("*.filez"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    dst = Repo.init(tmp_path / "dst", "bare-user")
    with pytest.raises(CorruptionError):
        pull(dst, f"file://{repo.path}", ["main"], retries=1, backoff=0)
    name = victim.parent.name + victim.name.split(".")[0]
    assert not (dst.objects / name[:2] / f"{name[2:]}.file").exists()
    assert dst.read_ref("main") is None
