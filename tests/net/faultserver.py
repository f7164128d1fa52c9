"""A fault-injecting HTTP/1.1 static server for the pull client's robustness tests.

Deliberately hand-rolled on raw sockets: it must be able to misbehave in ways a real server
library will not (lie about lengths, reset mid-body, stall, serve another file's bytes).
"""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

KINDS = ("truncate", "flip", "wrong", "500", "stall", "reset", "reset-mid")
HOLD_LIMIT = 60.0  # a stall or a pause never outlives this (a test that forgot it fails)
FaultFn = Callable[[int, str], str | None]


def request_paths(sock: socket.socket) -> Iterator[str]:
    """The path of each request arriving on ``sock`` (pipelined ones too), until EOF."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        yield head.split(b"\r\n")[0].split(b" ")[1].decode()


class _Handler(socketserver.BaseRequestHandler):
    server: FaultServer

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(10)
        try:
            for path in request_paths(sock):
                if not self.server.respond(sock, path):
                    return
        except OSError:  # the client went away (a killed pull): nothing to answer
            return


class FaultServer(socketserver.ThreadingTCPServer):
    """Serves ``root``; ``fault(index, path)`` names the misbehaviour for a request.

    ``pause_after=N``: once N ``.filez`` requests were answered, every further request
    waits until the test sets :attr:`resume` (:attr:`paused` tells it one is waiting), so a
    test can act in the middle of a pull whatever the machine's speed.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, fault: FaultFn | None = None, close_every: int = 0,
                 pause_after: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.fault = fault
        self.close_every = close_every  # announce Connection: close (nginx's keepalive_requests)
        self.pause_after = pause_after
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.filez_answered = 0
        self.hangups = 0  # stalled connections the client gave up on (its read timeout)
        self.hung_up = threading.Condition()
        self.count = 0
        self.lock = threading.Lock()
        self.injected: list[tuple[int, str, str]] = []
        self.sent: list[str] = []  # paths answered in full with 200, in order
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.resume.set()
        self.shutdown()
        self.server_close()

    def pause(self, after: int) -> None:
        """Re-arm the pause: once ``after`` more ``.filez`` requests were answered, hold
        every further request until :attr:`resume` is set."""
        with self.lock:
            self.filez_answered = 0
            self.pause_after = after
            self.paused.clear()
            self.resume.clear()

    def wait_hangups(self, n: int) -> bool:
        """True once the client has hung up on ``n`` stalled connections (the server
        notices a moment after the client's pull returned)."""
        with self.hung_up:
            return self.hung_up.wait_for(lambda: self.hangups >= n, HOLD_LIMIT)

    def _gate(self, path: str) -> None:
        if self.pause_after is None:
            return
        with self.lock:
            if self.filez_answered < self.pause_after:
                self.filez_answered += path.endswith(".filez")
                return
        self.paused.set()
        if not self.resume.wait(HOLD_LIMIT):
            raise RuntimeError(f"the test never resumed the server within {HOLD_LIMIT} s")

    def _file(self, path: str) -> bytes | None:
        rel = unquote(path).lstrip("/")
        if ".." in rel.split("/"):
            return None
        full = self.root / rel
        return full.read_bytes() if full.is_file() else None

    def respond(self, sock: socket.socket, path: str) -> bool:
        """Answer one request; False closes the connection."""
        body = self._file(path)
        self._gate(path)
        with self.lock:
            index = self.count
            self.count += 1
        kind = self.fault(index, path) if (self.fault and body is not None) else None
        if kind:
            with self.lock:
                self.injected.append((index, path, kind))
            return _misbehave(self, sock, path, body or b"", kind)
        if body is None:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return True
        closing = bool(self.close_every) and (index + 1) % self.close_every == 0
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n"
                     % (len(body), b"Connection: close\r\n" if closing else b"") + body)
        with self.lock:
            self.sent.append(path)
        return not closing


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _other_body(server: FaultServer, path: str) -> bytes:
    """Some other file of the same kind (a valid object under the wrong name)."""
    ext = path.rsplit(".", 1)[-1]
    for p in (server.root / "objects").rglob(f"*.{ext}"):
        if not path.endswith(p.name):
            return p.read_bytes()
    return b"x" * 10


def _misbehave(server: FaultServer, sock: socket.socket, path: str, body: bytes,
               kind: str) -> bool:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
    if kind == "truncate":
        sock.sendall(ok % len(body) + body[:len(body) // 2])
        sock.close()
        return False
    if kind == "flip":
        data = bytearray(body)
        if data:
            data[len(data) // 2] ^= 0x10
        sock.sendall(ok % len(data) + bytes(data))
        return True
    if kind == "wrong":
        other = _other_body(server, path)
        sock.sendall(ok % len(other) + other)
        return True
    if kind == "500":
        sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
        return True
    if kind == "stall":  # say nothing until the client's read timeout makes it hang up
        if _hold(sock):
            with server.hung_up:
                server.hangups += 1
                server.hung_up.notify_all()
        sock.close()
        return False
    if kind == "reset":
        _reset(sock)
        return False
    if kind == "reset-mid":
        sock.sendall(ok % len(body) + body[:max(1, len(body) // 3)])
        _reset(sock)
        return False
    raise ValueError(kind)


def _hold(sock: socket.socket) -> bool:
    """Send nothing; True once the client closes the connection (within HOLD_LIMIT s)."""
    sock.settimeout(HOLD_LIMIT)
    try:
        while sock.recv(65536):  # pipelined requests behind the stalled one
            pass
    except TimeoutError:
        return False
    except OSError:  # reset by the client: it gave up too
        return True
    return True


def first_tries(kind: str, tries: int, paths: set[str]) -> FaultFn:
    """``kind`` for the first ``tries`` requests of each of ``paths``, then the real file.

    Counted per path, so the faults a pull meets do not depend on the order in which its
    concurrent connections' requests happen to arrive.
    """
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def fault(_i: int, path: str) -> str | None:
        if path not in paths:
            return None
        with lock:
            seen[path] = seen.get(path, 0) + 1
            return kind if seen[path] <= tries else None
    return fault


def at(index: int, kind: str) -> FaultFn:
    return lambda i, _p: kind if i == index else None


def data_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


__all__ = ["KINDS", "FaultServer", "at", "first_tries", "os"]
