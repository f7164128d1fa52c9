"""The pipelined fast path of the fetch seam: it hands anything unusual to the careful
path instead of trusting it, and never buffers more than a reply's cap."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from faultserver import request_paths

from atomicedge.remote import pipeline
from atomicedge.remote.pipeline import Broken, Endpoint, get_many


def _serve(answer: Callable[[int, socket.socket], None],
           read_timeout: float = 60.0) -> Iterator[Endpoint]:
    """A raw server that calls ``answer(request_index, sock)`` for each request line."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    count = [0]
    stop = threading.Event()

    def conn(sock: socket.socket) -> None:
        with sock:
            for _path in request_paths(sock):
                count[0] += 1
                try:
                    answer(count[0] - 1, sock)
                except OSError:
                    return

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                s, _a = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=conn, args=(s,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield Endpoint("127.0.0.1", port, f"127.0.0.1:{port}", read_timeout=read_timeout)
    finally:
        stop.set()
        t.join()
        srv.close()


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_pipelined_replies_come_back_in_order() -> None:
    def answer(i: int, sock: socket.socket) -> None:
        sock.sendall(_ok(b"body-%d" % i))

    for ep in _serve(answer):
        got = list(get_many(ep, [f"/o/{i}" for i in range(100)], [100] * 100, depth=8))
    assert [(i, s) for i, s, _b in got] == [(i, 200) for i in range(100)]
    assert [b for _i, _s, b in got] == [b"body-%d" % i for i in range(100)]


def test_reply_over_its_cap_is_not_read_and_the_rest_still_arrive() -> None:
    """A server declaring a 10 GB object: the fast path gives up on that one at once
    (the careful path refuses it for good) instead of waiting for its body. The server
    sends the head and nothing more, and holds the connection until the client hangs up:
    a client that waited for the body would hit neither (its read timeout is longer than
    the server's patience), so the server would give up first."""
    hung_up = threading.Event()

    def answer(i: int, sock: socket.socket) -> None:
        if i == 1:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
            sock.settimeout(30)
            try:
                while sock.recv(65536):  # the pipelined request for /c, then EOF
                    pass
                hung_up.set()
            except TimeoutError:
                pass
            except OSError:  # reset by the client
                hung_up.set()
            sock.close()
            return
        sock.sendall(_ok(b"fine"))

    for ep in _serve(answer, read_timeout=120.0):
        got = list(get_many(ep, ["/a", "/b", "/c"], [1000] * 3))
    assert [(i, s, b) for i, s, b in got] == [(0, 200, b"fine"), (1, -1, None),
                                               (2, 200, b"fine")]
    assert hung_up.is_set(), "the client waited for the body instead of giving up"


def test_error_statuses_are_passed_on_without_a_body() -> None:
    def answer(i: int, sock: socket.socket) -> None:
        if i == 0:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
        else:
            sock.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")

    for ep in _serve(answer):
        got = list(get_many(ep, ["/missing", "/busy"], [100, 100]))
    assert got == [(0, 404, None), (1, 503, None)]


def test_a_dead_server_makes_every_item_fall_back_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = Endpoint("127.0.0.1", port, "x", connect_timeout=0.5)
    got = list(get_many(ep, ["/a", "/b", "/c"], [10] * 3))
    assert got == [(0, -1, None), (1, -1, None), (2, -1, None)]


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
    b"HTTP/1.1 200 OK\r\nContent-Length: -5",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5 junk",
    b"ICY 200 OK\r\nContent-Length: 5",
    b"HTTP/1.1 2x0 OK\r\nContent-Length: 5",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 200 OK\r\nno colon here",
], ids=["chunked", "no-length", "two-lengths", "negative", "junk-length", "not-http",
        "bad-status", "interim", "bad-header"])
def test_replies_the_fast_path_cannot_vouch_for_are_refused(head: bytes) -> None:
    with pytest.raises(Broken):
        pipeline._parse_head(head)


def test_connection_close_and_http_1_0_are_honoured() -> None:
    assert pipeline._parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                                b"Connection: close") == (200, 1, True)
    assert pipeline._parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1") == (200, 1, True)
    assert pipeline._parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n"
                                b"Connection: keep-alive") == (200, 1, False)
