"""HTTP/1.1 pipelining for the pull's thousands of small GETs (part of the fetch seam).

A pull of a fresh tree is ~7,500 requests for objects of a few kB each. Through urllib3 each
costs ~150 µs of Python plus a round trip, which made our client slower than libostree's C
one. Here one connection keeps up to ``depth`` requests in flight and parses the replies
with a few slicing operations, so a request costs ~10 µs and the link stays full.

This is deliberately the easy part only: plain ``200``/``404`` answers with a
``Content-Length``. Anything else (redirects, 5xx, chunked bodies, a reset, a stall, a body
over its cap) stops the pipeline for that item and :class:`~atomicedge.remote.http.Fetcher`
retries it through urllib3, which owns retries, backoff and redirects. A reply is never
trusted here either: the caller verifies every body's checksum before storing it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
_RECV = 256 * 1024


class Broken(Exception):
    """The connection cannot go on (reset, stall, protocol trouble): retry elsewhere."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: host, port, Host header, TLS, timeouts."""

    host: str
    port: int
    host_header: str
    tls: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0


def _connect(ep: Endpoint) -> socket.socket:
    sock = socket.create_connection((ep.host, ep.port), timeout=ep.connect_timeout)
    sock.settimeout(ep.read_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ep.tls:
        ctx = ssl.create_default_context()
        sock = ctx.wrap_socket(sock, server_hostname=ep.host)
    return sock


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, server closes after this reply) of a response head.

    Raises :class:`Broken` for anything this fast path does not handle.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise Broken(f"bad status line {lines[0][:60]!r}")
    status = int(parts[1])
    length = -1
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise Broken("malformed header line")
        key = name.strip().lower()
        if key == b"content-length":
            v = value.strip()
            if not v.isdigit() or (length >= 0 and int(v) != length):
                raise Broken("bad Content-Length")
            length = int(v)
        elif key == b"transfer-encoding":
            raise Broken("chunked reply")
        elif key == b"connection":
            tokens = value.lower().split(b",")
            close = b"close" in (t.strip() for t in tokens) or (
                close and b"keep-alive" not in (t.strip() for t in tokens))
    if length < 0 or status < 200:
        raise Broken(f"HTTP {status} without a length")
    return status, length, close


class _Reader:
    """Buffered reader of back-to-back responses on one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def _more(self) -> None:
        try:
            chunk = self.sock.recv(_RECV)
        except (OSError, ssl.SSLError) as exc:  # timeouts are OSErrors too
            raise Broken(str(exc) or exc.__class__.__name__) from None
        if not chunk:
            raise Broken("connection closed")
        if self.pos > _RECV:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def head(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                head = bytes(self.buf[self.pos:end])
                self.pos = end + 4
                return head
            if len(self.buf) - self.pos > MAX_HEAD:
                raise Broken("response head too large")
            self._more()

    def body(self, length: int) -> bytes:
        have = len(self.buf) - self.pos
        if have >= length:
            out = bytes(self.buf[self.pos:self.pos + length])
            self.pos += length
            return out
        out_buf = bytearray(length)
        view = memoryview(out_buf)
        view[:have] = self.buf[self.pos:]
        self.buf.clear()
        self.pos = 0
        got = have
        while got < length:
            try:
                n = self.sock.recv_into(view[got:], min(length - got, 4 << 20))
            except (OSError, ssl.SSLError) as exc:
                raise Broken(str(exc) or exc.__class__.__name__) from None
            if not n:
                raise Broken("connection closed mid-body")
            got += n
        return bytes(out_buf)


def get_many(ep: Endpoint, targets: Sequence[str], caps: Sequence[int], *,
             depth: int = 32, max_breaks: int = 3) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(index, status, body)`` once for each of ``targets``, in order.

    ``body`` is the reply to a ``200``, else None. Status ``-1`` means this path could not
    get an answer (reset, stall, over the cap, protocol trouble): the caller fetches that
    one the careful way. After a break the next target goes out on a new connection;
    after ``max_breaks`` breaks in a row without a single reply, the rest are all ``-1``.
    """
    i = 0
    breaks = 0
    while i < len(targets):
        if breaks >= max_breaks:
            for k in range(i, len(targets)):
                yield k, -1, None
            return
        try:
            sock = _connect(ep)
        except (OSError, ssl.SSLError):
            breaks += 1
            continue
        try:
            for reply in _exchange(sock, ep, targets, caps, i, depth):
                yield reply
                i = reply[0] + 1
                breaks = 0
        except Broken:
            breaks += 1
            yield i, -1, None  # the one that broke it
            i += 1
        finally:
            sock.close()


def _exchange(sock: socket.socket, ep: Endpoint, targets: Sequence[str],
              caps: Sequence[int], first: int,
              depth: int) -> Iterator[tuple[int, int, bytes | None]]:
    reader = _Reader(sock)
    sent = first
    host = ep.host_header
    for i in range(first, len(targets)):
        if sent - i < depth // 2 and sent < len(targets):
            end = min(len(targets), i + depth)
            req = "".join(f"GET {t} HTTP/1.1\r\nHost: {host}\r\n"
                          "User-Agent: atomicedge-pull/1\r\n\r\n" for t in targets[sent:end])
            try:
                sock.sendall(req.encode("ascii"))
            except (OSError, ssl.SSLError) as exc:
                raise Broken(str(exc)) from None
            sent = end
        status, length, close = _parse_head(reader.head())
        if length > caps[i]:  # leave it to the careful path, which refuses it for good
            raise Broken(f"{length} bytes, over the {caps[i]}-byte cap")
        body = reader.body(length)
        yield i, status, (body if status == 200 else None)
        if close:
            return
