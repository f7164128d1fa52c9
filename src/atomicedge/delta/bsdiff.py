"""bsdiff streams in the endsley/bsdiff *library* form that ostree's ``B`` opcode carries.

A stream is a sequence of control triples ``(x, y, z)`` (8-byte sign-magnitude little-endian
integers), each followed by ``x`` diff bytes and ``y`` extra bytes; no header, no bzip2.
Applying a triple: the next ``x`` output bytes are ``diff + old`` byte-wise (mod 256) from the
old cursor, the next ``y`` are copied from extra, then the old cursor moves by ``x + z``.

:func:`bspatch` is pure Python so a device needs no PyPI package to apply deltas (Debian has
no bsdiff4): the byte-wise addition is done on whole blocks as big integers (SIMD within a
register: add the low 7 bits, then xor in the top bits), which runs at C speed.
:func:`bsdiff` (generation, on the publishing host) uses bsdiff4's C core.
"""

from __future__ import annotations

import struct

from atomicedge.errors import CorruptionError

_CTRL = struct.Struct("<8s8s8s")


def _offtin(b: bytes) -> int:
    v = int.from_bytes(b, "little")
    return -(v & ~(1 << 63)) if v & (1 << 63) else v


def _offtout(v: int) -> bytes:
    return (abs(v) | ((1 << 63) if v < 0 else 0)).to_bytes(8, "little")


def add_bytes(a: bytes, b: bytes) -> bytes:
    """``bytes((x + y) & 0xFF for x, y in zip(a, b))`` for equal lengths, at C speed."""
    n = len(a)
    if n == 0:
        return b""
    low = int.from_bytes(b"\x7f" * n, "big")
    high = int.from_bytes(b"\x80" * n, "big")
    x = int.from_bytes(a, "big")
    y = int.from_bytes(b, "big")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "big")


def _add_old(diff: bytes, old: bytes, oldpos: int) -> bytes:
    """``diff`` plus the old bytes under it; old bytes outside ``old`` count as 0 (endsley)."""
    lo = min(max(oldpos, 0), oldpos + len(diff))
    hi = max(min(oldpos + len(diff), len(old)), lo)
    if lo >= hi:
        return diff
    a, b = lo - oldpos, hi - oldpos
    return diff[:a] + add_bytes(diff[a:b], old[lo:hi]) + diff[b:]


def bspatch(old: bytes, patch: bytes, new_size: int) -> bytes:
    """Apply a stream; every triple is bounds-checked against the patch and the new size."""
    out = bytearray()
    pos = 0
    oldpos = 0
    while len(out) < new_size:
        if pos + 24 > len(patch):
            raise CorruptionError("bsdiff stream is truncated")
        x, y, z = (_offtin(b) for b in _CTRL.unpack_from(patch, pos))
        pos += 24
        if x < 0 or y < 0 or pos + x + y > len(patch) or len(out) + x + y > new_size:
            raise CorruptionError("bsdiff stream has an invalid control triple")
        out += _add_old(patch[pos:pos + x], old, oldpos)
        out += patch[pos + x:pos + x + y]
        pos += x + y
        oldpos += x + z
    return bytes(out)


def bsdiff(old: bytes, new: bytes) -> bytes:
    """The stream turning ``old`` into ``new`` (bsdiff4's suffix-sort diff; host side only)."""
    import bsdiff4.core as bscore

    ctrl, diff, extra = bscore.diff(old, new)
    out = bytearray()
    dpos = epos = 0
    for i in range(0, len(ctrl), 24):
        x, y, z = (bscore.decode_int64(ctrl[i + k:i + k + 8]) for k in (0, 8, 16))
        out += _offtout(x) + _offtout(y) + _offtout(z)
        out += diff[dpos:dpos + x]
        out += extra[epos:epos + y]
        dpos += x
        epos += y
    return bytes(out)
