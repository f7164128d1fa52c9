"""Binary GVariant codec (normal form), the serialisation of every OSTree metadata object.

Pure functions over bytes. Decoding is strict: anything GLib would not produce in normal
form (bad framing, non-zero padding, wider offsets than needed, invalid UTF-8, trailing
garbage) raises :class:`GVariantError`, because libostree rejects such objects too and an
object we accept must be one the real ``ostree`` accepts.

Python values: ``y n q i u h x t`` -> int, ``b`` -> bool, ``d`` -> float, ``s o g`` -> str,
``ay`` -> bytes, ``aT`` -> list, ``a{KV}`` -> dict (insertion order kept, so re-encoding is
byte-identical), ``mT`` -> value or None, tuples -> tuple, ``v`` -> :class:`Variant`.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any, NamedTuple

from atomicedge.errors import FormatError


class GVariantError(FormatError):
    """Bytes that are not a normal-form GVariant of the requested type."""


class Variant(NamedTuple):
    """A boxed value (GVariant ``v``): its type string and its Python value."""

    type: str
    value: Any


_FIXED: dict[str, tuple[int, str]] = {
    "b": (1, "?"), "y": (1, "B"), "n": (2, "h"), "q": (2, "H"), "i": (4, "i"),
    "u": (4, "I"), "h": (4, "i"), "x": (8, "q"), "t": (8, "Q"), "d": (8, "d"),
}
_BASIC = set(_FIXED) | {"s", "o", "g"}


def _first_type(sig: str, pos: int = 0) -> int:
    """Return the end index of the single complete type starting at ``pos``."""
    if pos >= len(sig):
        raise GVariantError(f"incomplete type string {sig!r}")
    c = sig[pos]
    if c in _BASIC or c == "v":
        return pos + 1
    if c in "am":
        return _first_type(sig, pos + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        pos += 1
        count = 0
        while pos < len(sig) and sig[pos] != close:
            if c == "{" and count == 0 and sig[pos] not in _BASIC:
                raise GVariantError(f"dictionary key must be a basic type in {sig!r}")
            pos = _first_type(sig, pos)
            count += 1
        if pos >= len(sig):
            raise GVariantError(f"unterminated container in type {sig!r}")
        if c == "{" and count != 2:
            raise GVariantError(f"dictionary entry needs exactly two types in {sig!r}")
        return pos + 1
    raise GVariantError(f"invalid type character {c!r} in {sig!r}")


@cache
def children(sig: str) -> tuple[str, ...]:
    """Member types of a tuple or dict-entry type string."""
    out = []
    pos = 1
    while pos < len(sig) - 1:
        end = _first_type(sig, pos)
        out.append(sig[pos:end])
        pos = end
    return tuple(out)


@cache
def is_valid_type(sig: str) -> bool:
    try:
        return _first_type(sig) == len(sig)
    except (GVariantError, RecursionError):
        return False


@cache
def type_info(sig: str) -> tuple[int, int | None]:
    """(alignment, fixed size or None) of a type string."""
    c = sig[0]
    if c in _FIXED:
        size = 1 if c in "by" else struct.calcsize(_FIXED[c][1])
        return size, size
    if c in "sog":
        return 1, None
    if c == "v":
        return 8, None
    if c in "am":
        return type_info(sig[1:])[0], None
    kids = children(sig)
    align = max([1] + [type_info(k)[0] for k in kids])
    off = 0
    for k in kids:
        a, ksize = type_info(k)
        if ksize is None:
            return align, None
        off = -(-off // a) * a + ksize
    if not kids:
        return 1, 1
    return align, -(-off // align) * align


def _offset_width(total: int) -> int:
    if total == 0:
        return 0
    if total <= 0xFF:
        return 1
    if total <= 0xFFFF:
        return 2
    if total <= 0xFFFFFFFF:
        return 4
    return 8


def _writer_width(body: int, n: int) -> int:
    if body == 0 and n == 0:
        return 0
    for w in (1, 2, 4, 8):
        if body + n * w < 1 << (8 * w):
            return w
    raise GVariantError("value too large to serialise")


# ---------------------------------------------------------------------------------------
# encoding


def encode(sig: str, value: Any) -> bytes:
    """Serialise ``value`` as GVariant type ``sig`` in normal form."""
    try:
        return _encode(sig, value)
    except (TypeError, ValueError, AttributeError, struct.error, OverflowError) as exc:
        raise GVariantError(f"cannot encode {type(value).__name__} as {sig!r}: {exc}") from exc


def _encode(sig: str, value: Any) -> bytes:
    c = sig[0]
    if c in _FIXED:
        if c == "b" and value not in (True, False, 0, 1):
            raise ValueError("boolean must be 0 or 1")
        return struct.pack("<" + _FIXED[c][1], value)
    if c in "sog":
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if b"\0" in data:
            raise ValueError("string contains NUL")
        return data + b"\0"
    if c == "v":
        inner_sig, inner = value
        if not is_valid_type(inner_sig):
            raise ValueError(f"invalid variant type {inner_sig!r}")
        return _encode(inner_sig, inner) + b"\0" + inner_sig.encode("ascii")
    if c == "m":
        if value is None:
            return b""
        body = _encode(sig[1:], value)
        return body if type_info(sig[1:])[1] is not None else body + b"\0"
    if c == "a":
        return _encode_array(sig[1:], value)
    return _encode_tuple(sig, value)


def _encode_array(elem: str, value: Any) -> bytes:
    if elem == "y":
        return bytes(value)
    if elem[0] == "{" and isinstance(value, dict):
        value = list(value.items())
    align, fixed = type_info(elem)
    buf = bytearray()
    ends = []
    for item in value:
        buf += b"\0" * (-len(buf) % align)
        buf += _encode(elem, item)
        ends.append(len(buf))
    if fixed is not None:
        return bytes(buf)
    w = _writer_width(len(buf), len(ends))
    return bytes(buf) + b"".join(e.to_bytes(w, "little") for e in ends)


def _encode_tuple(sig: str, value: Any) -> bytes:
    kids = children(sig)
    if not kids:
        return b"\0"
    if len(value) != len(kids):
        raise ValueError(f"tuple {sig} needs {len(kids)} members, got {len(value)}")
    align, fixed = type_info(sig)
    buf = bytearray()
    ends = []
    last = len(kids) - 1
    for i, (k, item) in enumerate(zip(kids, value, strict=False)):
        buf += b"\0" * (-len(buf) % type_info(k)[0])
        buf += _encode(k, item)
        if i != last and type_info(k)[1] is None:
            ends.append(len(buf))
    if fixed is not None:
        return bytes(buf) + b"\0" * (-len(buf) % align)
    w = _writer_width(len(buf), len(ends))
    return bytes(buf) + b"".join(e.to_bytes(w, "little") for e in reversed(ends))


# ---------------------------------------------------------------------------------------
# decoding


def decode(sig: str, data: bytes, *, normal: bool = True) -> Any:
    """Parse ``data`` as type ``sig``.

    With ``normal`` (the default) the bytes must also be in normal form, checked by
    re-encoding: the strictest possible test and the one libostree applies.
    """
    if not is_valid_type(sig):
        raise GVariantError(f"invalid type string {sig!r}")
    data = bytes(data)
    try:
        value = _decode(sig, data, 0, len(data), 0)
    except GVariantError:
        raise
    except (ValueError, IndexError, struct.error, UnicodeDecodeError, RecursionError) as exc:
        raise GVariantError(f"malformed {sig!r} value: {exc}") from exc
    if normal and _encode(sig, value) != data:
        raise GVariantError(f"{sig!r} value is not in normal form")
    return value


def _read_offset(data: bytes, pos: int, w: int) -> int:
    return int.from_bytes(data[pos:pos + w], "little")


def _decode(sig: str, data: bytes, start: int, end: int, depth: int) -> Any:
    if depth > 64:
        raise GVariantError("GVariant nesting too deep")
    if not 0 <= start <= end <= len(data):
        raise GVariantError("framing offset out of bounds")
    c = sig[0]
    size = end - start
    if c in _FIXED:
        _, fixed = type_info(sig)
        if size != fixed:
            raise GVariantError(f"{sig!r} needs {fixed} bytes, got {size}")
        if c == "b" and data[start] > 1:
            raise GVariantError("boolean is not 0 or 1")
        return struct.unpack_from("<" + _FIXED[c][1], data, start)[0]
    if c in "sog":
        if size == 0 or data[end - 1] != 0 or data.find(b"\0", start, end - 1) != -1:
            raise GVariantError("string is not NUL-terminated exactly once")
        return data[start:end - 1].decode("utf-8")
    if c == "v":
        sep = data.rfind(b"\0", start, end)
        if sep < 0:
            raise GVariantError("variant without type separator")
        inner = data[sep + 1:end].decode("ascii")
        if not is_valid_type(inner):
            raise GVariantError(f"variant carries invalid type {inner!r}")
        return Variant(inner, _decode(inner, data, start, sep, depth + 1))
    if c == "m":
        if size == 0:
            return None
        if type_info(sig[1:])[1] is not None:
            return _decode(sig[1:], data, start, end, depth + 1)
        if data[end - 1] != 0:
            raise GVariantError("maybe value without trailing NUL")
        return _decode(sig[1:], data, start, end - 1, depth + 1)
    if c == "a":
        return _decode_array(sig[1:], data, start, end, depth)
    return _decode_tuple(sig, data, start, end, depth)


def _decode_array(elem: str, data: bytes, start: int, end: int, depth: int) -> Any:
    if elem == "y":
        return data[start:end]
    align, fixed = type_info(elem)
    size = end - start
    items: list[Any] = []
    if fixed is not None:
        if size % fixed:
            raise GVariantError(f"array of {elem!r} has a size that is not a multiple of {fixed}")
        items = [_decode(elem, data, start + i, start + i + fixed, depth + 1)
                 for i in range(0, size, fixed)]
    elif size:
        w = _offset_width(size)
        last_end = _read_offset(data, end - w, w)
        table = size - last_end
        if last_end > size or table % w or table == 0:
            raise GVariantError("bad array offset table")
        pos = 0
        for i in range(table // w):
            item_end = _read_offset(data, start + last_end + i * w, w)
            pos += -pos % align
            if not pos <= item_end <= last_end:
                raise GVariantError("array element out of bounds")
            items.append(_decode(elem, data, start + pos, start + item_end, depth + 1))
            pos = item_end
    if elem[0] == "{":
        return dict(items)
    return items


def _decode_tuple(sig: str, data: bytes, start: int, end: int, depth: int) -> tuple[Any, ...]:
    kids = children(sig)
    size = end - start
    _, fixed = type_info(sig)
    if fixed is not None and size != fixed:
        raise GVariantError(f"{sig!r} needs {fixed} bytes, got {size}")
    if not kids:
        return ()
    w = _offset_width(size)
    table_end = size  # offsets are consumed from the end backwards
    pos = 0
    out = []
    last = len(kids) - 1
    for i, k in enumerate(kids):
        align, ksize = type_info(k)
        pos += -pos % align
        if ksize is not None:
            item_end = pos + ksize
        elif i == last:
            item_end = table_end
        else:
            table_end -= w
            if table_end < 0:
                raise GVariantError("tuple offset table out of bounds")
            item_end = _read_offset(data, start + table_end, w)
        if not pos <= item_end <= table_end:
            raise GVariantError("tuple member out of bounds")
        out.append(_decode(k, data, start + pos, start + item_end, depth + 1))
        pos = item_end
    return tuple(out)
