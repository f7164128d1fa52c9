"""GRUB environment block codec (``/boot/grub/grubenv``).

The file is exactly 1024 bytes: the header line ``# GRUB Environment Block``, ``name=value``
lines (backslash and newline in values escaped with a backslash) and ``#`` padding up to the
block size.  GRUB's ``load_env``/``save_env`` and ``grub-editenv list`` refuse anything else,
and GRUB rewrites the block in place, so we must never change its size.  Parsing is strict so
a corrupt block is reported instead of silently treated as empty (which would disarm the boot
counter).
"""

from __future__ import annotations

from pathlib import Path

from atomicedge.errors import CorruptionError, UsageError
from atomicedge.fsutil import atomic_write

BLOCK_SIZE = 1024
HEADER = b"# GRUB Environment Block\n"


def _escape(value: str) -> bytes:
    return value.encode().replace(b"\\", b"\\\\").replace(b"\n", b"\\\n")


def encode(env: dict[str, str]) -> bytes:
    """Serialize ``env`` (insertion order kept) into one 1024-byte block."""
    body = bytearray(HEADER)
    for name, value in env.items():
        if not name or "=" in name or "\n" in name or name.startswith("#"):
            raise UsageError(f"grubenv: invalid variable name {name!r}")
        body += name.encode() + b"=" + _escape(value) + b"\n"
    if len(body) > BLOCK_SIZE:
        raise UsageError("grubenv: variables do not fit in the 1024-byte environment block",
                         "unset unused variables")
    return bytes(body) + b"#" * (BLOCK_SIZE - len(body))


def decode(data: bytes, *, source: str = "grubenv") -> dict[str, str]:
    """Parse a block the way GRUB does, but refuse anything GRUB would call invalid."""
    if len(data) != BLOCK_SIZE:
        raise CorruptionError(f"{source}: environment block is {len(data)} bytes, not 1024",
                              "recreate it with: grub-editenv FILE create")
    if not data.startswith(HEADER):
        raise CorruptionError(f"{source}: missing '# GRUB Environment Block' header",
                              "recreate it with: grub-editenv FILE create")
    env: dict[str, str] = {}
    pos = len(HEADER)
    while pos < BLOCK_SIZE:
        if data[pos:pos + 1] == b"#":  # comment or padding line
            nl = data.find(b"\n", pos)
            pos = BLOCK_SIZE if nl < 0 else nl + 1
            continue
        name_end = data.find(b"=", pos)
        nl = data.find(b"\n", pos)
        if name_end < 0 or (0 <= nl < name_end):
            raise CorruptionError(f"{source}: malformed line at byte {pos}",
                                  "recreate it with: grub-editenv FILE create")
        try:
            name = data[pos:name_end].decode()
        except UnicodeDecodeError as exc:
            raise CorruptionError(f"{source}: variable name is not UTF-8") from exc
        env[name], pos = _read_value(data, name_end + 1, source)
    return env


def _read_value(data: bytes, pos: int, source: str) -> tuple[str, int]:
    out = bytearray()
    while pos < BLOCK_SIZE:
        c = data[pos]
        if c == 0x5C and pos + 1 < BLOCK_SIZE:  # backslash escape
            out.append(data[pos + 1])
            pos += 2
            continue
        if c == 0x0A:
            try:
                return out.decode(), pos + 1
            except UnicodeDecodeError as exc:
                raise CorruptionError(f"{source}: value is not UTF-8") from exc
        out.append(c)
        pos += 1
    raise CorruptionError(f"{source}: unterminated variable at the end of the block",
                          "recreate it with: grub-editenv FILE create")


class GrubEnv:
    """A grubenv file on disk: read, change, write back atomically (same 1024 bytes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> dict[str, str]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        return decode(data, source=str(self.path))

    def write(self, env: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, encode(env))

    def update(self, set_: dict[str, str] | None = None,
               unset: tuple[str, ...] = ()) -> dict[str, str]:
        """Read-modify-write; a corrupt block raises before anything is written."""
        env = self.read()
        for k in unset:
            env.pop(k, None)
        env.update(set_ or {})
        self.write(env)
        return env
