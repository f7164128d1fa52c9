"""The failover prober: its analysis on synthetic records (outage, failures, who answered, the
app's start from zero per systemd), and its requests against real servers on loopback (an
answer, an HTTP error, a refused connection, a server that never answers)."""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atomicedge.errors import ToolError
from atomicedge.lab import probe
from atomicedge.lab.demo_apps import poll
from atomicedge.lab.probe import Gap, Probe


def ok(start: float, end: float, who: str) -> Probe:
    return Probe(start, end, True, answer=f"hello from app v1 on {who}")


def fail(start: float, end: float, error: str = "TimeoutError") -> Probe:
    return Probe(start, end, False, error=error)


# a failover as the prober sees it: edge1 answers, dies at 0.35, edge2 answers from 2.0
FAILOVER = [ok(0.0, 0.1, "edge1"), ok(0.12, 0.2, "edge1"), ok(0.22, 0.3, "edge1"),
            fail(0.32, 0.82), fail(0.84, 1.34, "ConnectionRefusedError"),
            ok(1.36, 2.0, "edge2"), ok(2.02, 2.05, "edge2")]


def test_outage_is_the_longest_time_between_two_answers_with_the_failures_in_it() -> None:
    assert probe.outage(FAILOVER) == Gap(0.3, 2.0, failed=2)
    assert probe.outage(FAILOVER).length == pytest.approx(1.7)
    assert probe.failures(FAILOVER) == 2
    assert probe.failures(FAILOVER, since=1.0) == 1
    assert probe.gaps(FAILOVER)[0] == Gap(0.0, 0.1, failed=0)   # up to the first answer


def test_an_outage_still_going_when_the_records_end_counts_and_is_open() -> None:
    records = [*FAILOVER, fail(2.07, 2.57), fail(2.6, 5.1)]
    assert probe.outage(records) == Gap(2.05, 5.1, failed=2, closed=False)


def test_outage_in_a_window_is_the_longest_that_ended_in_it() -> None:
    later = [ok(t, t + 0.05, "edge2") for t in (3.0, 3.1)] + [fail(3.2, 3.7), fail(3.7, 4.2),
                                                              fail(4.2, 4.7)]
    records = [*FAILOVER, *later, ok(4.7, 6.9, "edge1")]
    assert probe.outage(records).start == pytest.approx(3.15)        # the longer one: 3.75 s
    assert probe.outage(records, since=0.35, until=2.5) == Gap(0.3, 2.0, failed=2)
    assert probe.outage(records, since=5.0).end == pytest.approx(6.9)
    assert probe.outage(records, since=2.5, until=3.1).length == pytest.approx(1.0)
    assert probe.outage([]) is None


def test_runs_and_answers_name_the_device_in_the_order_it_answered() -> None:
    records = [*FAILOVER, ok(3.0, 3.5, "edge1")]
    assert [(r.who, r.answers) for r in probe.runs(records)] == [("edge1", 3), ("edge2", 2),
                                                                 ("edge1", 1)]
    assert probe.answered_by(records, 0.35, 2.9) == ["edge2", "edge2"]
    assert probe.answered_by(records, -math.inf, 0.2) == ["edge1", "edge1"]   # by start time
    assert probe.responder("hello from app v2 on edge2\n") == "edge2"
    assert probe.responder("hello") == ""


def test_a_round_as_the_prober_saw_it() -> None:
    r = probe.Round("crash", "edge1", "edge2", down=0.35, backup_holds=1.1, backup_start=0.6,
                    back=2.5, primary_holds=2.8, primary_alone=3.0, primary_start=0.9, end=6.0,
                    primary_listens=2.7)
    records = [*FAILOVER, ok(2.6, 2.7, "edge2"), fail(2.8, 3.3), ok(3.4, 4.1, "edge1"),
               ok(4.2, 4.3, "edge1")]
    s = probe.seen(r, records)
    assert r.vip_failover == pytest.approx(0.75) and r.failover == pytest.approx(1.35)
    assert r.failback == pytest.approx(1.1)
    # its app's socket listened only 0.3 s after it took the VIP: that counts, the VIP moved
    assert dataclasses.replace(r, primary_listens=3.1).failback == pytest.approx(1.2)
    assert s.outage == Gap(0.3, 2.0, failed=2)
    assert s.outage_back == Gap(2.7, 4.1, failed=1)
    assert s.on_backup == ["edge2", "edge2"] and s.on_primary == ["edge1", "edge1"]
    assert s.failed == 3 and s.restored == pytest.approx(1.65)


SHOW = """ActiveState=active
InactiveExitTimestampMonotonic=101200000
ActiveEnterTimestampMonotonic=101300000

ActiveState=active
InactiveExitTimestampMonotonic=100000000
ActiveEnterTimestampMonotonic=101150000
"""


def test_start_from_zero_runs_from_the_socket_trigger_to_the_proxy_ready() -> None:
    proxy, container = probe.unit_props(SHOW)
    assert probe.start_from_zero(proxy, container, since=99.0) == pytest.approx(1.3)
    # the app ran before the failover: nothing started from zero
    assert probe.start_from_zero(proxy, container, since=102.0) == 0.0
    # the container ran already, the proxy started: its own start only
    assert probe.start_from_zero(proxy, container, since=100.5) == pytest.approx(0.1)
    with pytest.raises(ToolError, match="inactive"):
        probe.start_from_zero({**proxy, "ActiveState": "inactive"}, container, since=99.0)


def test_parse_response_reads_status_and_body_and_refuses_what_is_not_http() -> None:
    assert probe.parse_response(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nhello\n") == (200, "hello\n")
    assert probe.parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")[0] == 503
    for raw in (b"", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.0 200 OK\r\n"):
        with pytest.raises(ValueError):
            probe.parse_response(raw)


# -- real requests on loopback --------------------------------------------------------------

class _App(BaseHTTPRequestHandler):
    state = {"who": "a", "down": False}

    def do_GET(self) -> None:
        down = self.state["down"]
        body = b"" if down else f"hello from app v1 on {self.state['who']}\n".encode()
        self.send_response(503 if down else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def app() -> Iterator[tuple[int, dict[str, object]]]:
    _App.state = {"who": "a", "down": False}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1], _App.state
    finally:
        server.shutdown()
        server.server_close()
        t.join()


def test_prober_records_answers_an_outage_and_who_answered_after_it(
        app: tuple[int, dict[str, object]]) -> None:
    port, state = app
    with probe.Prober("127.0.0.1", port, timeout=10, interval=0.005) as prober:
        poll("answers from a", lambda: len(probe.runs(prober.records)) == 1
             and probe.runs(prober.records)[0].answers >= 3, 60)
        state["down"] = True
        down = time.monotonic()
        poll("failures", lambda: sum(1 for p in prober.records if not p.ok
                                     and p.start > down) >= 2, 60)
        up = time.monotonic()
        state.update(who="b", down=False)
        poll("answers from b", lambda: probe.runs(prober.records)[-1].who == "b", 60)
    records = prober.records
    first = next(p for p in records if not p.ok)
    assert first.error == "HTTP 503"
    gap = next(g for g in probe.gaps(records) if g.start < first.end <= g.end)
    assert gap.start <= first.start and gap.end >= up and gap.failed >= 2
    assert [r.who for r in probe.runs(records)] == ["a", "b"]


def test_a_refused_connection_and_a_silent_server_are_failures_within_the_deadline() -> None:
    with socket.socket() as s:                    # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    refused = probe.request("127.0.0.1", free, timeout=5)
    assert not refused.ok and refused.error == "ConnectionRefusedError"
    with socket.socket() as silent:               # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        p = probe.request("127.0.0.1", silent.getsockname()[1], timeout=0.2)
    assert not p.ok and p.error == "TimeoutError" and p.end - p.start >= 0.19


def test_prober_runs_its_requests_where_enter_puts_them(
        app: tuple[int, dict[str, object]]) -> None:
    where: list[str] = []

    def enter(fn: object) -> None:
        where.append(threading.current_thread().name)
        assert callable(fn)
        fn()

    with probe.Prober("127.0.0.1", app[0], enter=enter) as prober:
        poll("an answer", lambda: any(p.ok for p in prober.records), 60)
    assert where == ["prober"]
