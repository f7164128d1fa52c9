"""Static delta names, paths and the superblock/part codecs (ostree's exact format).

Pure: bytes in, values out. A delta ``FROM-TO`` lives in ``deltas/<b64 FROM[:2]>/<b64
FROM[2:]>-<b64 TO>/`` where b64 is "modified base64" (standard alphabet, no padding,
``/`` -> ``_``); a from-scratch delta is ``deltas/<b64 TO[:2]>/<b64 TO[2:]>/``.
"""

from __future__ import annotations

import base64
import lzma
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge.errors import CorruptionError, FormatError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree import objects as ob
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import ObjectType
from atomicedge.trust import sign

SUPERBLOCK_SIG = "(a{sv}tayay" + ob.COMMIT_SIG + "aya(uayttay)a(yaytt))"
PART_PAYLOAD_SIG = "(a(uuu)aa(ayay)ayay)"
SIGNED_SUPERBLOCK_SIG = "(taya{sv})"
SIGNED_MAGIC = 0x4F535453474E4454  # "OSTSGNDT"
MAX_SUPERBLOCK = 64 * 1024 * 1024
MAX_PART_UNCOMPRESSED = 2 * 1024 * 1024 * 1024


def b64_csum(csum: str) -> str:
    return base64.b64encode(ob.raw(csum)).decode().rstrip("=").replace("/", "_")


def csum_from_b64(text: str) -> str:
    if len(text) != 43:
        raise FormatError(f"invalid delta name component {text!r}")
    try:
        raw = base64.b64decode(text.replace("_", "/") + "=", validate=True)
    except ValueError:
        raise FormatError(f"invalid delta name component {text!r}") from None
    return ob.hexsum(raw)


def delta_name(from_csum: str | None, to_csum: str) -> str:
    return f"{from_csum}-{to_csum}" if from_csum else to_csum


def parse_delta_name(name: str) -> tuple[str | None, str]:
    """``FROM-TO`` or ``TO`` -> (from or None, to), both validated."""
    frm, sep, to = name.rpartition("-")
    if sep:
        return ob.validate_checksum(frm), ob.validate_checksum(to)
    return None, ob.validate_checksum(name)


def delta_relpath(from_csum: str | None, to_csum: str) -> str:
    t = b64_csum(to_csum)
    if from_csum is None:
        return f"deltas/{t[:2]}/{t[2:]}"
    f = b64_csum(from_csum)
    return f"deltas/{f[:2]}/{f[2:]}-{t}"


def index_relpath(to_csum: str) -> str:
    t = b64_csum(to_csum)
    return f"delta-indexes/{t[:2]}/{t[2:]}.index"


def list_deltas(repo_path: Path) -> list[str]:
    """Names of every delta that has a superblock, sorted."""
    root = repo_path / "deltas"
    out: list[str] = []
    if not root.is_dir():
        return out
    for pre in sorted(os.listdir(root)):
        d = root / pre
        if len(pre) != 2 or not d.is_dir():
            continue
        for rest in sorted(os.listdir(d)):
            if not (d / rest / "superblock").is_file():
                continue
            try:
                if "-" in rest:
                    a, b = rest.split("-", 1)
                    out.append(delta_name(csum_from_b64(pre + a), csum_from_b64(b)))
                else:
                    out.append(csum_from_b64(pre + rest))
            except FormatError:
                continue
    return sorted(out)


# ---------------------------------------------------------------------------------------
# superblock


@dataclass
class PartHeader:
    version: int
    checksum: str  # sha256 of the part file
    size: int  # compressed size (the part file)
    usize: int  # uncompressed object bytes
    objects: list[tuple[ObjectType, str]]


@dataclass
class Fallback:
    objtype: ObjectType
    checksum: str
    compressed: int
    uncompressed: int


@dataclass
class Superblock:
    metadata: dict[str, Variant]
    timestamp: int
    from_csum: str | None
    to_csum: str
    commit: bytes  # the serialized TO commit
    parts: list[PartHeader] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)

    @property
    def big_endian(self) -> bool:
        e = self.metadata.get("ostree.endianness")
        return e is not None and e.value == ord("B")

    def inline_part(self, relpath: str, index: int) -> bytes | None:
        v = self.metadata.get(f"{relpath}/{index}")
        if v is None:
            return None
        if v.type != "(yay)":
            raise FormatError(f"inline delta part {index} has type {v.type}")
        return bytes([v.value[0]]) + bytes(v.value[1])

    def detached_meta(self, relpath: str) -> dict[str, Any] | None:
        v = self.metadata.get(f"{relpath}/commitmeta")
        if v is None:
            return None
        if v.type != "a{sv}":
            raise FormatError("superblock commitmeta entry is not a{sv}")
        return dict(v.value)


def _swap64(v: int, big: bool) -> int:
    return ob.bswap64(v) if big else v


def _swap32(v: int, big: bool) -> int:
    return ob.bswap32(v) if big else v


def _objlist(data: bytes) -> list[tuple[ObjectType, str]]:
    if len(data) % 33:
        raise FormatError("delta part object list is not a multiple of 33 bytes")
    out = []
    for i in range(0, len(data), 33):
        try:
            t = ObjectType(data[i])
        except ValueError:
            raise FormatError(f"delta part lists an object of unknown type {data[i]}") from None
        out.append((t, data[i + 1:i + 33].hex()))
    return out


def unwrap_signed(data: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """A signed superblock file -> (plain superblock bytes, signatures); plain -> (data, None)."""
    if data[:8] != b"OSTSGNDT":
        return data, None
    magic, inner, sigs = gv.decode(SIGNED_SUPERBLOCK_SIG, data)
    if ob.bswap64(magic) != SIGNED_MAGIC:
        raise FormatError("signed delta superblock with a bad magic")
    return bytes(inner), dict(sigs)


def wrap_signed(inner: bytes, signatures: dict[str, Any]) -> bytes:
    """The signed superblock file: ``(taya{sv})`` = (magic, plain superblock, signatures)."""
    return gv.encode(SIGNED_SUPERBLOCK_SIG, (ob.bswap64(SIGNED_MAGIC), inner, signatures))


def verify_superblock(data: bytes, keys: Sequence[str], what: str) -> None:
    """Raise CorruptionError unless the superblock file carries a valid ed25519 signature
    by one of ``keys`` (several: key rotation)."""
    inner, sigs = unwrap_signed(data)
    if sigs is None:
        raise CorruptionError(f"{what} is not signed",
                              "generate it with: static-delta generate --sign=SECRET")
    sign.verify(what, inner, sigs, sign.TrustPolicy(ed25519=True, ed25519_keys=list(keys)))


def parse_superblock(data: bytes) -> Superblock:
    if len(data) > MAX_SUPERBLOCK:
        raise CorruptionError(f"delta superblock of {len(data)} bytes is over the cap")
    meta, ts, frm, to, commit, _recurse, parts, fallbacks = gv.decode(SUPERBLOCK_SIG, data)
    meta = dict(meta)
    e = meta.get("ostree.endianness")
    big = e is not None and e.value == ord("B")
    if e is None:  # pre-2015 deltas: guess from the sizes
        big = _guess_big_endian(parts)
    sb = Superblock(meta, ob.bswap64(ts), ob.hexsum(bytes(frm)) if frm else None,
                    ob.hexsum(bytes(to)), gv.encode(ob.COMMIT_SIG, commit))
    for version, csum, size, usize, objs in parts:
        sb.parts.append(PartHeader(_swap32(version, big), ob.hexsum(bytes(csum)),
                                   _swap64(size, big), _swap64(usize, big),
                                   _objlist(bytes(objs))))
        if sb.parts[-1].version != 0:
            raise FormatError(f"unsupported delta part version {sb.parts[-1].version}")
    for objtype, csum, comp, uncomp in fallbacks:
        try:
            t = ObjectType(objtype)
        except ValueError:
            raise FormatError(f"delta fallback of unknown type {objtype}") from None
        sb.fallbacks.append(Fallback(t, ob.hexsum(bytes(csum)), _swap64(comp, big),
                                     _swap64(uncomp, big)))
    return sb


def _guess_big_endian(parts: list[Any]) -> bool:
    le = sum(p[2] for p in parts)
    be = sum(ob.bswap64(p[2]) for p in parts)
    return be < le


def encode_superblock(sb: Superblock) -> bytes:
    meta = dict(sb.metadata)
    meta.setdefault("ostree.endianness", Variant("y", ord("l")))
    commit = gv.decode(ob.COMMIT_SIG, sb.commit)
    return gv.encode(SUPERBLOCK_SIG, (
        meta, ob.bswap64(sb.timestamp), ob.raw(sb.from_csum) if sb.from_csum else b"",
        ob.raw(sb.to_csum), commit, b"",
        [(p.version, ob.raw(p.checksum), p.size, p.usize,
          b"".join(bytes([t]) + ob.raw(c) for t, c in p.objects)) for p in sb.parts],
        [(int(f.objtype), ob.raw(f.checksum), f.compressed, f.uncompressed)
         for f in sb.fallbacks]))


# ---------------------------------------------------------------------------------------
# parts


@dataclass
class PartPayload:
    modes: list[tuple[int, int, int]]  # (uid, gid, mode), host values
    xattrs: list[ob.Xattrs]
    blob: bytes
    ops: bytes


def decompress_part(data: bytes, max_size: int = MAX_PART_UNCOMPRESSED) -> bytes:
    """A part file (compression byte + payload) -> uncompressed payload, bomb-safe."""
    if not data:
        raise FormatError("empty delta part")
    kind, body = data[0], data[1:]
    if kind == 0:
        return body
    if kind == ord("x"):
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=512 * 1024 * 1024)
        try:
            out = d.decompress(body, max_length=max_size + 1)
        except lzma.LZMAError as exc:
            raise CorruptionError(f"delta part does not decompress: {exc}") from None
        if len(out) > max_size:
            raise CorruptionError(f"delta part inflates beyond the {max_size}-byte cap",
                                  "refusing a decompression bomb")
        if not d.eof:
            raise CorruptionError("delta part xz stream is truncated")
        return out
    raise FormatError(f"unknown delta part compression {chr(kind)!r}")


def parse_part(payload: bytes) -> PartPayload:
    modes, xattrs, blob, ops = gv.decode(PART_PAYLOAD_SIG, payload)
    return PartPayload(
        [(ob.bswap32(u), ob.bswap32(g), ob.bswap32(m)) for u, g, m in modes],
        [ob.validate_xattrs(tuple((bytes(n), bytes(v)) for n, v in x)) for x in xattrs],
        bytes(blob), bytes(ops))


def encode_part(p: PartPayload, compress: bool = True) -> bytes:
    payload = gv.encode(PART_PAYLOAD_SIG, (
        [(ob.bswap32(u), ob.bswap32(g), ob.bswap32(m)) for u, g, m in p.modes],
        [[(n, v) for n, v in x] for x in p.xattrs], p.blob, p.ops))
    if not compress:
        return b"\0" + payload
    return b"x" + lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                preset=8)
