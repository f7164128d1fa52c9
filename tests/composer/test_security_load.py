"""Security and load: TCP needs the token, the socket is root:group 0660, a hypothesis fuzz of
the API finds no 500s, and 50 concurrent clients listing, pushing and polling see no errors."""

from __future__ import annotations

import http.client
import json
import socket
import stat
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomicedge.composer.client import Client
from tests.composer.conftest import Server, blueprint, push


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp(port: int, path: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}


def test_tcp_without_the_token_is_refused(servers: Callable[..., Server],
                                          tmp_path: Path) -> None:
    port = _free_port()
    token_file = tmp_path / "token"
    srv = servers(workers=0, extra=("--listen", f"127.0.0.1:{port}",
                                    "--token-file", str(token_file))).start()
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32
    for path in ("/api/status", "/api/v1/blueprints/list", "/api/v1/compose/status/*"):
        code, body, _ = _tcp(port, path)
        assert code == 401 and json.loads(body)["errors"][0]["id"] == "HTTPError", path
        assert _tcp(port, path, "wrong-token-wrong-token-wrong")[0] == 401
        assert _tcp(port, path, token)[0] == 200
    code, body, headers = _tcp(port, "/ui/")          # the UI's files hold no data
    assert code == 200 and headers["content-type"].startswith("text/html")
    code, _, headers = _tcp(port, "/")
    assert code == 302 and headers["location"] == "/ui/"
    client = Client(socket=None, url=f"http://127.0.0.1:{port}", token=token)
    assert client.get("blueprints/list")["total"] == 0
    mode = srv.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert srv.socket.stat().st_uid == 0


def test_tcp_listener_without_a_token_file_does_not_start(composer_repo: Path,
                                                         tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "atomicedge.cli.main", "composer", "serve", "--no-socket",
         "--listen", f"127.0.0.1:{_free_port()}", "--state", str(tmp_path / "s"),
         "--offline-repo", str(composer_repo), "--profile", "test"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: --listen needs --token-file")
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, composer_repo: Path,
        composer_cache: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("fuzz"), composer_repo, composer_cache,
                    workers=0).start()
    push(server.client(), blueprint("fuzzed", "1.0.0"))
    yield server
    server.stop()
    server.kill_group()


ROUTES = ["/api/status", "/api/v{v}/blueprints/list", "/api/v{v}/blueprints/info/{a}",
          "/api/v{v}/blueprints/changes/{a}", "/api/v{v}/blueprints/change/{a}/{b}",
          "/api/v{v}/blueprints/new", "/api/v{v}/blueprints/workspace",
          "/api/v{v}/blueprints/workspace/{a}", "/api/v{v}/blueprints/delete/{a}",
          "/api/v{v}/blueprints/undo/{a}/{b}", "/api/v{v}/blueprints/tag/{a}",
          "/api/v{v}/blueprints/diff/{a}/{b}/{c}", "/api/v{v}/blueprints/freeze/{a}",
          "/api/v{v}/projects/list", "/api/v{v}/projects/info/{a}",
          "/api/v{v}/modules/list/{a}", "/api/v{v}/projects/source/info/{a}",
          "/api/v{v}/projects/source/delete/{a}", "/api/v{v}/compose",
          "/api/v{v}/compose/types", "/api/v{v}/compose/queue",
          "/api/v{v}/compose/status/{a}", "/api/v{v}/compose/info/{a}",
          "/api/v{v}/compose/cancel/{a}", "/api/v{v}/compose/delete/{a}",
          "/api/v{v}/compose/log/{a}", "/api/v{v}/compose/image/{a}",
          "/api/v{v}/compose/results/{a}", "/api/v{v}/distros/list", "/ui/{a}"]
SEGMENT = st.one_of(
    st.sampled_from(["fuzzed", "..", ".", "*", "NEWEST", "WORKSPACE", "%2F", "..%2F..",
                     "00000000-0000-4000-8000-000000000000", "a,b", "fuzzed,..", "%00",
                     "%ff", "edge-*"]),
    st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=20).map(
        lambda t: "".join(c if (c.isascii() and c.isalnum()) or c in "-._,*"
                          else f"%{ord(c) % 256:02X}" for c in t)))
BODY = st.one_of(
    st.none(), st.binary(max_size=200),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["name", "version", "blueprint_name", "compose_type", "packages",
                         "ostree", "size", "customizations", "distro", "modules"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=12), st.booleans(),
                  st.lists(st.dictionaries(st.sampled_from(["name", "version"]),
                                           st.text(max_size=8)), max_size=2),
                  st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2)),
        max_size=5)),
    st.sampled_from([b'name = "fuzzed"\nversion = "1.0.0"', b"name = ", b"[[packages]]",
                     b'name = "x"\n[customizations]\nhostname = 5']))


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), version=st.sampled_from(["0", "1", "2", "x"]),
       a=SEGMENT, b=SEGMENT, c=SEGMENT,
       method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]), body=BODY,
       ctype=st.sampled_from([None, "application/json", "text/x-toml", "text/plain",
                              "application/json; charset=utf-8"]),
       query=st.sampled_from(["", "?format=toml", "?format=x", "?limit=-1", "?offset=9e99",
                              "?test=1", "?test=2", "?size=abc", "?distro=x&arch=y",
                              "?status=RUNNING&blueprint=.."]))
def test_api_fuzz_finds_no_server_errors(srv: Server, route: str, version: str, a: str,
                                         b: str, c: str, method: str, body: bytes | None,
                                         ctype: str | None, query: str) -> None:
    path = route.format(v=version, a=a, b=b, c=c) + query
    reply = srv.client().request(method, path, body, ctype)
    assert reply.status < 500, (method, path, body, reply.status, reply.body[:300])
    if reply.headers.get("content-type", "").startswith("application/json") and reply.body:
        json.loads(reply.body)


def test_fifty_concurrent_clients_see_no_errors(srv: Server) -> None:
    rounds, clients = 8, 50
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def one(n: int) -> None:
        c = Client(socket=str(srv.socket), timeout=60)
        text = f'name = "load-{n}"\nversion = "1.0.0"\n[[packages]]\nname = "edge-hello"\n'
        start.wait()
        for _ in range(rounds):
            for method, path, body in (
                    ("GET", "/api/v1/blueprints/list?limit=100", None),
                    ("POST", "/api/v1/blueprints/new", text.encode()),
                    ("GET", "/api/v1/compose/status/*", None),
                    ("GET", "/api/status", None)):
                t0 = time.perf_counter()
                try:
                    reply = c.request(method, path, body, "text/x-toml" if body else None)
                    ok = reply.status == 200 and json.loads(reply.body).get("status", True)
                    why = f"{method} {path}: {reply.status} {reply.body[:200]!r}"
                except Exception as exc:   # a refused or dropped connection is a failure
                    ok, why = False, f"{method} {path}: {exc!r}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if not ok:
                        failures.append(why)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    wall = time.perf_counter() - t0
    assert not failures, failures[:5]
    assert len(latencies) == clients * rounds * 4
    q = statistics.quantiles(latencies, n=100)
    print(f"\n50 clients, {len(latencies)} requests in {wall:.1f} s "
          f"({len(latencies) / wall:.0f} req/s): p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms")
    names = srv.client().get("blueprints/list?limit=1000")["blueprints"]
    assert {f"load-{n}" for n in range(clients)} <= set(names)
    for n in (0, clients - 1):   # 1.0.0 pushed again and again: 1.0.0, 1.0.1, 1.0.0, ...
        assert srv.client().get(f"blueprints/changes/load-{n}")["blueprints"][0]["total"] \
            == rounds
        assert srv.client().get(f"blueprints/info/load-{n}")["blueprints"][0]["version"] \
            == ("1.0.1" if rounds % 2 == 0 else "1.0.0")
