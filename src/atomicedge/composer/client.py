"""A small synchronous weldr API client (unix socket or TCP with a token), for the CLI.

Every exchange is recorded (method, path, status, JSON body) so ``--json`` can print them the
way composer-cli does.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge.errors import AtomicEdgeError, NotFoundError


class ApiError(AtomicEdgeError):
    """The server answered with ``status: false``; ``errors`` holds its (id, msg) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{i}: {m}" for i, m in errors) or "request failed")
        self.errors = errors


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Client:
    socket: str | None = "/run/weldr/api.socket"
    url: str | None = None
    token: str | None = None
    timeout: float = 240.0
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def _conn(self) -> http.client.HTTPConnection:
        if self.url:
            host = self.url.split("://", 1)[-1].rstrip("/")
            return http.client.HTTPConnection(host, timeout=self.timeout or None)
        assert self.socket is not None
        return _UnixConnection(self.socket, self.timeout or None)  # type: ignore[arg-type]

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None, sink: Path | None = None) -> Reply:
        headers = {"Content-Type": content_type} if content_type else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._conn()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            if sink is not None and resp.status == 200:
                with open(sink, "wb") as fh:
                    while chunk := resp.read(1 << 20):
                        fh.write(chunk)
                data = b""
            else:
                data = resp.read()
        except FileNotFoundError:
            raise NotFoundError(f"socket {self.socket} does not exist",
                                "is `atomicedge composer serve` running? (-s PATH)") from None
        except PermissionError:
            raise AtomicEdgeError(f"permission denied on {self.socket}",
                                  "run as root or as a member of the socket's group") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise AtomicEdgeError(f"cannot reach the composer: {exc}",
                                  "check -s/--socket or --server http://HOST:PORT") from None
        finally:
            conn.close()
        reply = Reply(resp.status, hdrs, data)
        parsed = reply.json() if data else None
        self.exchanges.append({"method": method, "path": path, "status": resp.status,
                               "body": parsed if isinstance(parsed, dict) else {}})
        return reply

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None) -> Any:
        """JSON request; ApiError for ``status: false`` (or any non-2xx) answers."""
        reply = self.request(method, path, body, content_type)
        data = reply.json()
        if isinstance(data, dict) and data.get("status") is False:
            raise ApiError([(e.get("id", "?"), e.get("msg", "")) for e in data.get("errors", [])])
        if reply.status >= 300:
            raise ApiError([("HTTPError", f"{reply.status} from {path}")])
        return data

    def get(self, path: str) -> Any:
        return self.call("GET", f"/api/v1/{path}")

    def text(self, path: str) -> str:
        reply = self.request("GET", f"/api/v1/{path}")
        data = reply.json() if reply.headers.get("content-type", "").startswith(
            "application/json") else None
        if isinstance(data, dict) and data.get("status") is False:
            raise ApiError([(e.get("id", "?"), e.get("msg", "")) for e in data.get("errors", [])])
        if reply.status >= 300:
            raise ApiError([("HTTPError", f"{reply.status} from {path}")])
        return reply.body.decode(errors="replace")

    def download(self, path: str, dest: Path) -> int:
        """Stream a file route into ``dest`` (written to a temporary name, then renamed)."""
        tmp = dest.with_name(f".{dest.name}.part")
        reply = self.request("GET", f"/api/v1/{path}", sink=tmp)
        if reply.status != 200:
            tmp.unlink(missing_ok=True)
            data = reply.json()
            errs = data.get("errors", []) if isinstance(data, dict) else []
            raise ApiError([(e.get("id", "?"), e.get("msg", "")) for e in errs]
                           or [("HTTPError", f"{reply.status} from {path}")])
        tmp.replace(dest)
        return dest.stat().st_size
