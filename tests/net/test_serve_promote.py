"""Server behaviour and /stats (Must show 6), remotes, summary, and atomic promotion."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from net_helpers import make_tree, ostree_client, ostree_fsck, run

from atomicedge.cli.main import main
from atomicedge.delta import format as df
from atomicedge.ostree import objects as ob
from atomicedge.ostree import summary
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from atomicedge.publish import promote
from atomicedge.publish.serve import Server
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import pull
from atomicedge.trust import sign


def _get(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_stats_count_exactly_what_the_client_received(tmp_path: Path, server: Server) -> None:
    dst = Repo.init(tmp_path / "dst", "bare-user")
    res = pull(dst, server.url, ["main"])
    status, body, _h = _get(server.url + "/stats")
    stats = json.loads(body)
    assert status == 200
    assert stats["bytes"] == res.stats.bytes
    assert stats["files"] == res.stats.requests - res.stats.retries - \
        server.stats.not_found


def test_server_head_range_etag_and_404s(server: Server, src_repo: tuple[Repo, str]) -> None:
    url = server.url
    status, body, headers = _get(url + "/config")
    assert status == 200 and body.startswith(b"[core]")
    etag = headers["ETag"]
    assert _get(url + "/config", {"If-None-Match": etag})[0] == 304
    status, part, headers = _get(url + "/config", {"Range": "bytes=1-4"})
    assert status == 206 and part == body[1:5]
    status, head_body, headers = _get(url + "/config", method="HEAD")
    assert status == 200 and head_body == b"" and int(headers["Content-Length"]) == len(body)
    for bad in ("/objects", "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                "/refs/heads/../../config/x", "/nonexistent"):
        assert _get(url + bad)[0] == 404, bad
    outside = src_repo[0].path.parent / "secret"
    outside.write_text("secret")
    (src_repo[0].path / "link").symlink_to(outside)
    assert _get(url + "/link")[0] == 404


def test_object_fast_path_serves_only_regular_files_inside_the_repo(
        tmp_path: Path) -> None:
    """Object names take a short path (no path resolution); it must be as tight as the
    general one: a symlinked object or prefix directory leading outside is a 404, a large
    object is counted exactly, and nothing but GET/HEAD is accepted."""
    repo = Repo.init(tmp_path / "r", "archive")
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (repo.path / "objects/aa").mkdir(parents=True)
    (repo.path / "objects/aa" / ("b" * 62 + ".filez")).symlink_to(secret)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / ("c" * 62 + ".dirtree")).write_bytes(b"outside")
    (repo.path / "objects/cc").symlink_to(tmp_path / "elsewhere")
    big = bytes(range(256)) * 2048  # 512 kB: over the in-memory threshold
    (repo.path / "objects/dd").mkdir()
    (repo.path / "objects/dd" / ("d" * 62 + ".filez")).write_bytes(big)
    with Server(repo.path) as srv:
        assert _get(srv.url + "/objects/aa/" + "b" * 62 + ".filez")[0] == 404
        assert _get(srv.url + "/objects/cc/" + "c" * 62 + ".dirtree")[0] == 404
        status, body, _h = _get(srv.url + "/objects/dd/" + "d" * 62 + ".filez")
        assert status == 200 and body == big
        assert _get(srv.url + "/config", method="POST")[0] == 405
        assert srv.stats.files == 1 and srv.stats.bytes == len(big)
        assert srv.stats.not_found == 2


def test_remote_config_is_read_by_ostree(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    repo = Repo.init(tmp_path / "r", "bare-user")
    r = str(repo.path)
    assert main(["repo", "remote", "add", "--repo", r, "--no-gpg-verify", "origin",
                 "http://127.0.0.1:9/repo", "main", "stable"]) == 0
    assert main(["repo", "remote", "add", "--repo", r, "prod", "file:///srv/repo"]) == 0
    assert run("ostree", f"--repo={r}", "remote", "show-url", "origin").stdout.strip() == \
        "http://127.0.0.1:9/repo"
    assert run("ostree", f"--repo={r}", "remote", "list").stdout.split() == ["origin", "prod"]
    gpg = run("ostree", f"--repo={r}", "config", "get", 'remote "prod".gpg-verify').stdout
    assert gpg.strip() == "true"
    assert main(["repo", "remote", "list", "--repo", r, "-u"]) == 0
    assert "origin  http://127.0.0.1:9/repo" in capsys.readouterr().out
    assert main(["repo", "remote", "delete", "--repo", r, "prod"]) == 0
    assert main(["repo", "remote", "delete", "--repo", r, "prod"]) == 1
    assert main(["repo", "remote", "add", "--repo", r, "bad name", "http://x"]) == 2
    assert remotes.names(Repo.open(repo.path)) == ["origin"]


def test_summary_update_is_read_by_ostree_view(tmp_path: Path, tree: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo = Repo.init(tmp_path / "r", "archive")
    from atomicedge.ostree.gvariant import Variant
    v1 = commit_directory(repo, tree, branch="b/one", subject="1",
                          metadata={"version": Variant("s", "1.0")})
    make_tree(tree, 2)
    v2 = commit_directory(repo, tree, branch="a-two", subject="2")
    from atomicedge.delta import generate as delta
    delta.generate(repo, v1, v2)
    assert main(["repo", "summary", "-u", "--repo", str(repo.path), "-m", "team=edge"]) == 0
    out = run("ostree", f"--repo={repo.path}", "summary", "--view").stdout
    assert out.index("* a-two") < out.index("* b/one")
    assert v1 in out and v2 in out and "Version (ostree.commit.version): 1.0" in out
    assert f"{v1}-{v2}" in out and "team" in out
    assert (repo.path / df.index_relpath(v2)).is_file()
    assert main(["repo", "summary", "--view", "--repo", str(repo.path)]) == 0
    ours = capsys.readouterr().out
    assert "* a-two" in ours and "Version (ostree.commit.version): 1.0" in ours
    ours_s = summary.load(repo)
    run("ostree", f"--repo={repo.path}", "summary", "-u")
    s = summary.load(repo)  # and we read ostree's own summary
    assert [r.name for r in s.refs] == ["a-two", "b/one"] and s.deltas == ours_s.deltas
    for theirs, mine in zip(s.refs, ours_s.refs, strict=True):
        # commit size (host order), checksum, BE timestamp and version are the same
        assert (theirs.size, theirs.commit, theirs.timestamp, theirs.version) == \
            (mine.size, mine.commit, mine.timestamp, mine.version)
    for key in ("ostree.summary.mode", "ostree.summary.tombstone-commits",
                "ostree.summary.indexed-deltas"):
        assert s.metadata[key] == ours_s.metadata[key], key


def test_promotion_is_idempotent_and_publishes_delta_and_summary(tmp_path: Path,
                                                                 tree: Path) -> None:
    stage = Repo.init(tmp_path / "stage", "archive")
    v1 = commit_directory(stage, tree, branch="os", subject="v1")
    prod = tmp_path / "prod"
    res = promote.promote(f"file://{stage.path}", prod, ["os"])
    assert res == {"os": (None, v1)}
    make_tree(tree, 2)
    v2 = commit_directory(stage, tree, branch="os", subject="v2")
    assert main(["repo", "promote", "--from", f"file://{stage.path}", "--to", str(prod),
                 "os"]) == 0
    p = Repo.open(prod)
    assert p.read_ref("os") == v2
    assert summary.load(p).deltas.keys() == {f"{v1}-{v2}"}
    mtime = (prod / "summary").stat().st_mtime_ns
    assert promote.promote(f"file://{stage.path}", prod, ["os"]) == {"os": (v2, v2)}
    assert (prod / "summary").stat().st_mtime_ns == mtime  # a no-op
    secret, public = sign.ed25519_generate()
    make_tree(tree, 3)
    commit_directory(stage, tree, branch="os", subject="v3")
    assert main(["repo", "promote", "--from", f"file://{stage.path}", "--to", str(prod),
                 "--sign", secret, "os"]) == 0
    sig = ob.decode_metadata_dict((prod / "summary.sig").read_bytes())
    pol = sign.TrustPolicy(ed25519=True, ed25519_keys=[public])
    sign.verify("summary", (prod / "summary").read_bytes(), sig, pol)
    ostree_fsck(prod)
    with Server(prod) as srv:
        client = ostree_client(tmp_path / "client", srv.url, "--no-gpg-verify")
        run("ostree", f"--repo={client}", "pull", "origin", "os")
    ostree_fsck(client)


def test_promotion_is_atomic_under_a_concurrent_reader(tmp_path: Path, tree: Path) -> None:
    """A reader polling the summary never finds a listed commit with missing objects."""
    stage = Repo.init(tmp_path / "stage", "archive")
    prod = tmp_path / "prod"
    commit_directory(stage, tree, branch="os", subject="v0")
    promote.promote(f"file://{stage.path}", prod, ["os"])
    stop = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                s = summary.parse((prod / "summary").read_bytes())
            except Exception as exc:  # a torn summary would land here
                problems.append(f"summary unreadable: {exc}")
                continue
            repo = Repo.open(prod)
            for ref in s.refs:
                if ref.commit in seen:
                    continue
                for csum, objtype in reachable(repo, ref.commit):
                    if not repo.has_object(csum, objtype):
                        problems.append(f"{ref.commit}: {objtype.ext} {csum} missing")
                seen.add(ref.commit)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 4):
            make_tree(tree, i + 1)
            (tree / f"extra{i}").write_bytes(bytes([i]) * 5000 * i)
            commit_directory(stage, tree, branch="os", subject=f"v{i}")
            promote.promote(f"file://{stage.path}", prod, ["os"])
    finally:
        stop.set()
        t.join()
    assert not problems, problems[:3]
    assert len(seen) >= 2
    assert Repo.open(prod).has_object(Repo.open(prod).read_ref("os") or "", ObjectType.COMMIT)


def test_cli_serve_logs_running_totals_and_stops_on_sigterm(src_repo: tuple[Repo, str]
                                                            ) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "atomicedge"
    proc = subprocess.Popen([str(exe), "repo", "serve", "--repo", str(src_repo[0].path),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first
        for _ in range(50):
            try:
                status, body, _h = _get(f"http://127.0.0.1:{port}/config")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200
        line = proc.stdout.readline()
        assert "GET /config 200" in line and f"served 1 files, {len(body)} bytes" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    assert rc == 0


def test_cli_serve_on_a_port_in_use_is_one_clear_error(src_repo: tuple[Repo, str]) -> None:
    import socket
    import subprocess
    import sys
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exe = Path(sys.executable).parent / "atomicedge"
        proc = subprocess.run([str(exe), "repo", "serve", "--repo", str(src_repo[0].path),
                               "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "pick another --port" in proc.stderr and "Traceback" not in proc.stderr
