"""A client that keeps asking the VIP while it moves, what its records say, and the failover
rounds the tests and ``bench/failover.py`` share.

The prober runs on the lab's host side (a thread in the lab's network namespace): one request
after the other, each on a new connection with a short deadline, stamped with the monotonic
clock (the one the devices' systemd uses too: nspawn gives no time namespace). Its analysis is
pure (records in, numbers out): the gaps between successful answers (the longest is the
*outage*), the failed requests, and which device answered (the app's answer names it).

A failover round (:func:`crash_round`, :func:`stop_round`) measures its own failover time
without the prober: from the kill (or stop) until the backup holds the VIP per ``ip addr``,
plus the backup's app start from zero per its systemd (socket trigger to proxy ready); the same
back again when the primary returns (preemption).
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atomicedge.errors import ToolError
from atomicedge.lab.demo_apps import AppLab, poll
from atomicedge.runner import run

REQUEST_TIMEOUT = 0.5     # seconds per request (connect + answer)
INTERVAL = 0.02           # seconds between the end of one request and the next
MAX_ANSWER = 64 * 1024
PROXY = "app-proxy.service"       # the app's socket-activated proxy (core's user unit)
CONTAINER = "httpd.service"       # the app's container (Quadlet, StopWhenUnneeded)
SOCKET = "app-proxy.socket"       # the app's port on the VIP
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: |$)")
_ON = re.compile(r"\bon ([a-z0-9][a-z0-9-]*)$")


# -- records and their analysis (pure) ------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One request: when it started and ended (monotonic s), and what came back."""

    start: float
    end: float
    ok: bool
    answer: str = ""          # the body of a 200 answer, stripped
    error: str = ""           # why not: "ConnectionRefusedError", "TimeoutError", "HTTP 503"


@dataclass(frozen=True)
class Gap:
    """An interval without a successful answer: from the end of one success to the end of the
    next (``closed=False``: none came before the records end)."""

    start: float
    end: float
    failed: int
    closed: bool = True

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Run:
    """Consecutive successful answers from one device."""

    who: str
    first: float
    last: float
    answers: int


def responder(answer: str) -> str:
    """The device an answer names: ``hello from app v1 on edge2`` -> ``edge2`` ('' if none)."""
    m = _ON.search(answer.strip())
    return m.group(1) if m else ""


def parse_response(raw: bytes) -> tuple[int, str]:
    """(status, body) of an HTTP/1.x answer read to its end; ValueError when it is not one."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    m = _STATUS.match(head)
    if not sep or not m:
        raise ValueError("not an HTTP answer")
    return int(m.group(1)), body.decode(errors="replace")


def gaps(records: Sequence[Probe]) -> list[Gap]:
    """Every interval without a success, in order: before the first success (from the first
    request's start), between consecutive successes, and after the last one if requests
    failed there (open)."""
    recs = sorted(records, key=lambda p: p.end)
    if not recs:
        return []
    out: list[Gap] = []
    since, failed = recs[0].start, 0
    for p in recs:
        if p.ok:
            out.append(Gap(since, p.end, failed))
            since, failed = p.end, 0
        else:
            failed += 1
    if failed:
        out.append(Gap(since, recs[-1].end, failed, closed=False))
    return out


def outage(records: Sequence[Probe], since: float = -math.inf,
           until: float = math.inf) -> Gap | None:
    """The longest interval without a success that ended in (since, until]: the outage of a
    failover that happened in that window (it began before ``since`` if the last answer did)."""
    inside = [g for g in gaps(records) if since < g.end <= until]
    return max(inside, key=lambda g: g.length, default=None)


def failures(records: Sequence[Probe], since: float = -math.inf,
             until: float = math.inf) -> int:
    """Failed requests that ended in [since, until)."""
    return sum(1 for p in records if not p.ok and since <= p.end < until)


def errors(records: Sequence[Probe], since: float = -math.inf,
           until: float = math.inf) -> dict[str, int]:
    """Why requests that ended in [since, until) failed: error -> count."""
    out: dict[str, int] = {}
    for p in records:
        if not p.ok and since <= p.end < until:
            out[p.error] = out.get(p.error, 0) + 1
    return out


def answered_by(records: Sequence[Probe], since: float, until: float,
                who: Callable[[str], str] = responder) -> list[str]:
    """Who answered the successful requests that *started* in (since, until), in order."""
    return [who(p.answer) for p in records if p.ok and since < p.start < until]


def runs(records: Sequence[Probe], who: Callable[[str], str] = responder) -> list[Run]:
    """Successful answers grouped into runs of the same device, in time order."""
    out: list[Run] = []
    for p in sorted((p for p in records if p.ok), key=lambda p: p.end):
        w = who(p.answer)
        if out and out[-1].who == w:
            r = out[-1]
            out[-1] = Run(w, r.first, p.end, r.answers + 1)
        else:
            out.append(Run(w, p.end, p.end, 1))
    return out


# -- the prober (I/O) -------------------------------------------------------------------------

def _exchange(host: str, port: int, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    with socket.create_connection((host, port), timeout=max(left, 0.001)) as s:
        s.sendall(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete answer within the request's deadline")
            s.settimeout(left)
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            size += len(data)
            if size > MAX_ANSWER:
                raise ValueError(f"answer larger than {MAX_ANSWER} bytes")
            chunks.append(data)


def request(host: str, port: int, timeout: float = REQUEST_TIMEOUT) -> Probe:
    """One GET on a new connection, all of it within ``timeout`` seconds."""
    start = time.monotonic()
    try:
        status, body = parse_response(_exchange(host, port, start + timeout))
    except (OSError, ValueError) as exc:
        return Probe(start, time.monotonic(), False, error=type(exc).__name__)
    end = time.monotonic()
    if status != 200:
        return Probe(start, end, False, error=f"HTTP {status}")
    return Probe(start, end, True, answer=body.strip())


class Prober:
    """Requests to ``host:port`` one after the other in a thread until :meth:`stop`.

    ``enter`` runs the loop somewhere else: ``lab.in_host`` puts it on the lab's host side
    (default: the calling process's own network namespace)."""

    def __init__(self, host: str, port: int, *, timeout: float = REQUEST_TIMEOUT,
                 interval: float = INTERVAL,
                 enter: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.host, self.port, self.timeout, self.interval = host, port, timeout, interval
        self._enter = enter
        self._records: list[Probe] = []
        self._stop = threading.Event()
        self._error: list[BaseException] = []
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._records.append(request(self.host, self.port, self.timeout))
            self._stop.wait(self.interval)      # pacing, not synchronisation

    def _main(self) -> None:
        try:
            if self._enter is None:
                self._loop()
            else:
                self._enter(self._loop)
        except BaseException as exc:  # handed to stop()
            self._error.append(exc)

    def start(self) -> Prober:
        self._thread = threading.Thread(target=self._main, name="prober", daemon=True)
        self._thread.start()
        return self

    @property
    def records(self) -> list[Probe]:
        """What it has recorded so far (a copy)."""
        return list(self._records)

    def count(self) -> int:
        return len(self._records)

    def since(self, index: int) -> list[Probe]:
        return self._records[index:]

    def stop(self) -> list[Probe]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 60)
            if self._thread.is_alive():
                raise ToolError("the prober did not stop")
        if self._error:
            raise ToolError(f"the prober failed: {self._error[0]!r}")
        return self.records

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- failover rounds, timed without the prober -----------------------------------------------

@dataclass(frozen=True)
class Round:
    """The VIP to the backup and back, timed by ``ip addr`` and the devices' systemd
    (monotonic seconds)."""

    kind: str               # "crash" (SIGKILL, NIC gone) or "stop" (keepalived stopped)
    primary: str
    backup: str
    down: float             # the kill, or the stop command
    backup_holds: float     # the backup holds the VIP (ip addr)
    backup_start: float     # the backup's app started from zero in (s; 0: it was running)
    back: float             # the primary boots again / its keepalived is started
    primary_holds: float    # the primary holds the VIP again (first seen)
    primary_alone: float    # ... and the backup no longer
    primary_start: float    # the primary's app started from zero in (s; 0: it was running)
    end: float
    primary_listens: float = -math.inf   # the primary's app socket listens since (monotonic)

    @property
    def vip_failover(self) -> float:
        return self.backup_holds - self.down

    @property
    def failover(self) -> float:
        """Measured failover time: the VIP moved, then the app started from zero there."""
        return self.vip_failover + self.backup_start

    @property
    def failback(self) -> float:
        """The same back: from the primary taking the VIP until it holds it alone and its app's
        socket listens (it can take the VIP before: a boot-order race), then its app's start."""
        return max(self.primary_alone, self.primary_listens) - self.primary_holds \
            + self.primary_start


@dataclass(frozen=True)
class Seen:
    """What the prober saw during one round."""

    outage: Gap | None           # the longest without an answer around the failover
    outage_back: Gap | None      # ... around the way back
    on_backup: list[str]         # who answered requests started while the backup held the VIP
    on_primary: list[str]        # ... once the primary alone held it again
    failed: int
    restored: float | None       # from the kill/stop to the backup's first answer


def seen(r: Round, records: Sequence[Probe], who: Callable[[str], str] = responder) -> Seen:
    first = next((p for p in records if p.ok and p.start > r.down and who(p.answer) == r.backup),
                 None)
    return Seen(outage(records, r.down, r.back), outage(records, r.back, r.end),
                answered_by(records, r.backup_holds, r.back, who),
                answered_by(records, r.primary_alone, r.end, who),
                failures(records, r.down, r.end), first.end - r.down if first else None)


def unit_props(text: str) -> list[dict[str, str]]:
    """``systemctl show UNIT...`` output: one dict per unit, in the order asked."""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition("=")
        blocks[-1][key] = value
    return [b for b in blocks if b]


def start_from_zero(proxy: dict[str, str], container: dict[str, str], since: float) -> float:
    """Seconds the app took to start after ``since``: from the first start job the socket's
    trigger queued (the container's; the proxy's waits for it) until the proxy runs (its
    ExecStartPre waits for the container's port); 0.0 when it was running before ``since``."""
    if proxy.get("ActiveState") != "active":
        raise ToolError(f"{PROXY} is {proxy.get('ActiveState')} although the app answered")
    proxy_began = int(proxy["InactiveExitTimestampMonotonic"]) / 1e6
    if proxy_began < since:
        return 0.0
    began = int(container["InactiveExitTimestampMonotonic"]) / 1e6
    began = min(began, proxy_began) if began >= since else proxy_began
    return int(proxy["ActiveEnterTimestampMonotonic"]) / 1e6 - began


def app_start(apps: AppLab, name: str, since: float) -> float:
    """:func:`start_from_zero` on device ``name``, per core's systemd."""
    out = apps.user_systemctl(name, "show", "-p", "ActiveState", "-p",
                              "InactiveExitTimestampMonotonic", "-p",
                              "ActiveEnterTimestampMonotonic", PROXY, CONTAINER).stdout
    proxy, container = unit_props(out)
    return start_from_zero(proxy, container, since)


def listening_since(apps: AppLab, name: str) -> float:
    """Since when the app's socket on ``name`` listens (monotonic s, per core's systemd)."""
    out = apps.user_systemctl(name, "show", "-p", "ActiveEnterTimestampMonotonic", "--value",
                              SOCKET).stdout
    return int(out.strip() or 0) / 1e6


def scale_to_zero(apps: AppLab, name: str) -> None:
    """Stop the app's proxy (the container is then unneeded and stops): the state after its
    idle time, without waiting for it."""
    apps.user_systemctl(name, "stop", PROXY)
    poll(f"no container on {name}", lambda: apps.containers(name) == [], 120, every=0.2)


def kill(apps: AppLab, name: str) -> float:
    """``virsh destroy``: the device's supervisor, nspawn and systemd SIGKILLed at once and its
    NIC cut (the bridge side of its veth down: the dead machine's network namespace would go on
    answering ARP for the VIP until ``lab down`` removes it). Returns the moment of the kill."""
    t0 = apps.sigkill(name)
    run(["ip", "-n", apps.lab.net.netns, "link", "set", apps.lab.net.veth(name), "down"],
        what=f"cut the NIC of {name}", timeout=30)
    return t0


def wait_answer(prober: Prober, name: str, after: float, timeout: float = 120.0) -> Probe:
    """Until the prober has an answer from ``name`` to a request started after ``after``."""
    def found() -> Probe | None:
        return next((p for p in reversed(prober.records) if p.ok and p.start > after
                     and responder(p.answer) == name), None)
    return poll(f"an answer from {name}", found, timeout, every=0.05)


def _holds(apps: AppLab, name: str, other: str | None = None, timeout: float = 60.0) -> float:
    """Until ``name`` holds the VIP (and ``other`` no longer): the moment it was seen."""
    poll(f"{name} to hold the VIP", lambda: apps.holds_vip(name)
         and not (other and apps.holds_vip(other)), timeout, every=0.01)
    return time.monotonic()


def _back(apps: AppLab, prober: Prober, primary: str, backup: str, back: float,
          timeout: float) -> tuple[float, float, float, float]:
    """The primary (back since ``back``) takes the VIP back: (first seen holding it, holding
    it alone, its app's start from zero, its app's socket listening since)."""
    holds = _holds(apps, primary, timeout=timeout)
    alone = _holds(apps, primary, backup)
    wait_answer(prober, primary, after=alone)
    return holds, alone, app_start(apps, primary, back), listening_since(apps, primary)


def crash_round(apps: AppLab, prober: Prober, primary: str, backup: str) -> Round:
    """Kill the primary; the backup holds the VIP and answers; the primary boots again and
    answers; the backup's app back to zero."""
    down = kill(apps, primary)
    backup_holds = _holds(apps, backup)
    wait_answer(prober, backup, after=backup_holds)
    backup_start = app_start(apps, backup, down)
    apps.lab.down(primary, timeout=60)            # what is left of it: namespace, files
    back = time.monotonic()
    apps.up(primary, wait=False)
    holds, alone, primary_start, listens = _back(apps, prober, primary, backup, back, 300)
    apps.lab.wait(primary, timeout=300)
    scale_to_zero(apps, backup)
    return Round("crash", primary, backup, down, backup_holds, backup_start, back, holds,
                 alone, primary_start, time.monotonic(), listens)


def stop_round(apps: AppLab, prober: Prober, primary: str, backup: str) -> Round:
    """Stop keepalived on the primary (it sends priority 0), the backup answers, keepalived
    started again: the primary answers; the backup's app back to zero."""
    down = time.monotonic()
    apps.lab.run(primary, ["systemctl", "stop", "--no-block", "keepalived.service"], timeout=60)
    backup_holds = _holds(apps, backup, primary)
    wait_answer(prober, backup, after=backup_holds)
    backup_start = app_start(apps, backup, down)
    back = time.monotonic()
    apps.lab.run(primary, ["systemctl", "start", "keepalived.service"], timeout=60)
    holds, alone, primary_start, listens = _back(apps, prober, primary, backup, back, 60)
    scale_to_zero(apps, backup)
    return Round("stop", primary, backup, down, backup_holds, backup_start, back, holds,
                 alone, primary_start, time.monotonic(), listens)
