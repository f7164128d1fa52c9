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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

KINDS = ("truncate", "flip", "wrong", "500", "stall", "reset", "reset-mid")
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
        for path in request_paths(sock):
            if not self.server.respond(sock, path):
                return


class FaultServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, fault: FaultFn | None = None, stall: float = 1.0,
                 delay: float = 0.0, close_every: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.fault = fault
        self.stall = stall
        self.delay = delay
        self.close_every = close_every  # announce Connection: close (nginx's keepalive_requests)
        self.count = 0
        self.lock = threading.Lock()
        self.injected: list[tuple[int, str, str]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def _file(self, path: str) -> bytes | None:
        rel = unquote(path).lstrip("/")
        if ".." in rel.split("/"):
            return None
        full = self.root / rel
        return full.read_bytes() if full.is_file() else None

    def respond(self, sock: socket.socket, path: str) -> bool:
        """Answer one request; False closes the connection."""
        body = self._file(path)
        if self.delay:
            time.sleep(self.delay)
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
    if kind == "stall":
        time.sleep(server.stall)
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


def every(n: int, kind: str) -> FaultFn:
    return lambda i, _p: kind if i % n == n - 1 else None


def at(index: int, kind: str) -> FaultFn:
    return lambda i, _p: kind if i == index else None


def data_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


__all__ = ["KINDS", "FaultServer", "at", "every", "os"]
