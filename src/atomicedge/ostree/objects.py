"""OSTree object codecs: content headers, dirmeta, dirtree, commit, archive ``.filez``.

Pure: bytes in, values out. Field byte orders follow libostree exactly (uid/gid/mode and the
commit timestamp are big-endian inside little-endian GVariant framing), so checksums match
``ostree commit`` bit for bit.
"""

from __future__ import annotations

import hashlib
import re
import stat
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from atomicedge.errors import CorruptionError, FormatError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree.gvariant import Variant

Xattrs = tuple[tuple[bytes, bytes], ...]

CHECKSUM_RE = re.compile(r"^[0-9a-f]{64}$")
EMPTY_DIRTREE = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"

DIRMETA_SIG = "(uuua(ayay))"
DIRTREE_SIG = "(a(say)a(sayay))"
COMMIT_SIG = "(a{sv}aya(say)sstayay)"
FILEHEADER_SIG = "(uuuusa(ayay))"
ARCHIVEHEADER_SIG = "(tuuuusa(ayay))"
XATTRS_SIG = "a(ayay)"


class ObjectType(IntEnum):
    FILE = 1
    DIR_TREE = 2
    DIR_META = 3
    COMMIT = 4
    TOMBSTONE_COMMIT = 5
    COMMIT_META = 6

    @property
    def ext(self) -> str:
        return _EXT[self]

    @property
    def is_meta(self) -> bool:
        return self != ObjectType.FILE


_EXT = {
    ObjectType.FILE: "file", ObjectType.DIR_TREE: "dirtree", ObjectType.DIR_META: "dirmeta",
    ObjectType.COMMIT: "commit", ObjectType.TOMBSTONE_COMMIT: "tombstone-commit",
    ObjectType.COMMIT_META: "commitmeta",
}
EXT_TO_TYPE = {v: k for k, v in _EXT.items()}


def bswap32(v: int) -> int:
    """Swap a u32 so that our little-endian codec stores it big-endian, as ostree does."""
    return int.from_bytes(v.to_bytes(4, "big"), "little")


def bswap64(v: int) -> int:
    return int.from_bytes(v.to_bytes(8, "big"), "little")


def validate_checksum(csum: str) -> str:
    if not CHECKSUM_RE.match(csum):
        raise FormatError(f"invalid checksum {csum!r}", "expected 64 lower-case hex digits")
    return csum


def raw(csum: str) -> bytes:
    return bytes.fromhex(validate_checksum(csum))


def hexsum(data: bytes) -> str:
    if len(data) != 32:
        raise FormatError(f"checksum field has {len(data)} bytes instead of 32")
    return data.hex()


def validate_name(name: str) -> str:
    """Refuse dirtree entry names that could escape a checkout (libostree's rule)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CorruptionError(f"invalid file name {name!r} in a dirtree",
                              "the object is malicious or corrupt; it is never written to disk")
    return name


def validate_xattrs(xattrs: Xattrs) -> Xattrs:
    names = [n for n, _ in xattrs]
    if any(not n or n[-1:] != b"\0" or b"\0" in n[:-1] for n in names):
        raise FormatError("xattr names must be non-empty and NUL-terminated")
    if names != sorted(set(names)):
        raise FormatError("xattrs are not sorted by name or contain duplicates")
    return xattrs


# ---------------------------------------------------------------------------------------
# content objects


@dataclass(frozen=True, slots=True)
class FileHeader:
    """Metadata of a content object: what ostree hashes in front of the file bytes."""

    uid: int
    gid: int
    mode: int
    symlink_target: str = ""
    xattrs: Xattrs = ()
    rdev: int = 0

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def validate(self) -> None:
        if not (stat.S_ISREG(self.mode) or stat.S_ISLNK(self.mode)):
            raise FormatError(f"content object has mode {self.mode:o}, not a file or symlink")
        if self.mode & ~(stat.S_IFMT(self.mode) | 0o7777):
            raise FormatError(f"content object mode {self.mode:o} has invalid bits")
        if self.is_symlink and not self.symlink_target:
            raise FormatError("symlink content object without a target")
        validate_xattrs(self.xattrs)


def _xattr_list(xattrs: Xattrs) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in xattrs]


_EMPTY_PLAIN_HDR = struct.Struct(">III")


def file_header_bytes(h: FileHeader) -> bytes:
    """``(uuuusa(ayay))`` with uid/gid/mode/rdev big-endian."""
    if not h.xattrs and not h.symlink_target:
        # hot path for the common plain file: 16 fixed bytes, "" and the one offset byte
        return _EMPTY_PLAIN_HDR.pack(h.uid, h.gid, h.mode) + struct.pack(">I", h.rdev) + b"\0\x11"
    return gv.encode(FILEHEADER_SIG, (bswap32(h.uid), bswap32(h.gid), bswap32(h.mode),
                                      bswap32(h.rdev), h.symlink_target,
                                      _xattr_list(h.xattrs)))


def stream_prefix(h: FileHeader) -> bytes:
    """The bytes hashed before the file content: ``be32(len) 0000 header``."""
    hdr = file_header_bytes(h)
    return struct.pack(">I4x", len(hdr)) + hdr


def content_checksum(h: FileHeader, content: bytes = b"") -> str:
    m = hashlib.sha256(stream_prefix(h))
    if not h.is_symlink:
        m.update(content)
    return m.hexdigest()


def archive_header_bytes(h: FileHeader, size: int) -> bytes:
    """The ``.filez`` preamble: ``be32(len) 0000 (tuuuusa(ayay))`` with size BE."""
    hdr = gv.encode(ARCHIVEHEADER_SIG, (bswap64(size), bswap32(h.uid), bswap32(h.gid),
                                        bswap32(h.mode), bswap32(h.rdev), h.symlink_target,
                                        _xattr_list(h.xattrs)))
    return struct.pack(">I4x", len(hdr)) + hdr


def _split_prefixed(data: bytes, what: str) -> tuple[bytes, int]:
    if len(data) < 8:
        raise FormatError(f"{what} is truncated ({len(data)} bytes)")
    (hlen,) = struct.unpack_from(">I", data, 0)
    if data[4:8] != b"\0\0\0\0" or 8 + hlen > len(data):
        raise FormatError(f"{what} has a bad header length")
    return data[8:8 + hlen], 8 + hlen


_PLAIN_ARCHIVE_HDR = struct.Struct(">QIIII")


def parse_archive_header(data: bytes) -> tuple[FileHeader, int, int]:
    """Parse the start of a ``.filez``: (header, uncompressed size, payload offset)."""
    if data[:8] == b"\0\0\0\x1a\0\0\0\0" and data[32:34] == b"\0\x19":
        # the common case (no symlink target, no xattrs) has a fixed 26-byte header
        size, uid, gid, mode, rdev = _PLAIN_ARCHIVE_HDR.unpack_from(data, 8)
        h = FileHeader(uid, gid, mode, "", (), rdev)
        h.validate()
        return h, size, 34
    hdr, off = _split_prefixed(data, "archive content object")
    size, uid, gid, mode, rdev, target, xattrs = gv.decode(ARCHIVEHEADER_SIG, hdr)
    h = FileHeader(bswap32(uid), bswap32(gid), bswap32(mode), target,
                   tuple((bytes(n), bytes(v)) for n, v in xattrs), bswap32(rdev))
    h.validate()
    return h, bswap64(size), off


def parse_file_header(data: bytes) -> tuple[FileHeader, int]:
    """Parse an uncompressed content stream prefix: (header, content offset)."""
    hdr, off = _split_prefixed(data, "content stream")
    uid, gid, mode, rdev, target, xattrs = gv.decode(FILEHEADER_SIG, hdr)
    h = FileHeader(bswap32(uid), bswap32(gid), bswap32(mode), target,
                   tuple((bytes(n), bytes(v)) for n, v in xattrs), bswap32(rdev))
    h.validate()
    return h, off


def encode_ostreemeta(uid: int, gid: int, mode: int, xattrs: Xattrs) -> bytes:
    """The ``user.ostreemeta`` xattr of bare-user objects (and the dirmeta encoding)."""
    if not xattrs:  # hot path: three BE u32 and an empty trailing array, no framing
        return _EMPTY_PLAIN_HDR.pack(uid, gid, mode)
    return gv.encode(DIRMETA_SIG, (bswap32(uid), bswap32(gid), bswap32(mode),
                                   _xattr_list(xattrs)))


def decode_ostreemeta(data: bytes) -> tuple[int, int, int, Xattrs]:
    uid, gid, mode, xattrs = gv.decode(DIRMETA_SIG, data)
    return (bswap32(uid), bswap32(gid), bswap32(mode),
            tuple((bytes(n), bytes(v)) for n, v in xattrs))


# ---------------------------------------------------------------------------------------
# dirmeta / dirtree


@dataclass(frozen=True, slots=True)
class DirMeta:
    uid: int
    gid: int
    mode: int
    xattrs: Xattrs = ()

    def encode(self) -> bytes:
        return encode_ostreemeta(self.uid, self.gid, self.mode, self.xattrs)

    @classmethod
    def decode(cls, data: bytes) -> DirMeta:
        if len(data) == 12:  # no xattrs: three BE u32 and an empty array, nothing to frame
            uid, gid, mode = _EMPTY_PLAIN_HDR.unpack(data)
            if not stat.S_ISDIR(mode):
                raise FormatError(f"dirmeta mode {mode:o} is not a directory")
            return cls(uid, gid, mode)
        uid, gid, mode, xattrs = decode_ostreemeta(data)
        if not stat.S_ISDIR(mode):
            raise FormatError(f"dirmeta mode {mode:o} is not a directory")
        validate_xattrs(xattrs)
        return cls(uid, gid, mode, xattrs)


@dataclass(frozen=True, slots=True)
class DirTree:
    """Files ``(name, content csum)`` and dirs ``(name, dirtree csum, dirmeta csum)``."""

    files: tuple[tuple[str, str], ...] = ()
    dirs: tuple[tuple[str, str, str], ...] = ()

    def encode(self) -> bytes:
        """Hand-framed ``(a(say)a(sayay))``: the commit hot path (one per directory).

        Byte-identical to ``gv.encode(DIRTREE_SIG, ...)`` (a test holds it to that)."""
        files = _frame_array([_frame_entry(n.encode(), bytes.fromhex(c))
                              for n, c in sorted(self.files, key=_name_key)])
        dirs = _frame_array([_frame_entry(n.encode(), bytes.fromhex(t) + bytes.fromhex(m),
                                          split=32)
                             for n, t, m in sorted(self.dirs, key=_name_key)])
        body = files + dirs
        return body + len(files).to_bytes(gv._writer_width(len(body), 1), "little")

    @classmethod
    def decode(cls, data: bytes) -> DirTree:
        try:
            fast = _fast_dirtree(bytes(data))
        except (ValueError, IndexError, UnicodeDecodeError):
            fast = None
        if fast is not None:
            return fast
        return cls._decode_slow(data)

    @classmethod
    def _decode_slow(cls, data: bytes) -> DirTree:
        """Generic path: slower, but names precisely what is wrong with a bad dirtree."""
        files, dirs = gv.decode(DIRTREE_SIG, data)
        ft = tuple((validate_name(n), hexsum(c)) for n, c in files)
        dt = tuple((validate_name(n), hexsum(t), hexsum(m)) for n, t, m in dirs)
        for seq in ([n for n, _ in ft], [n for n, *_ in dt]):
            keys = [n.encode() for n in seq]
            if keys != sorted(set(keys)):
                raise FormatError("dirtree entries are not sorted or contain duplicates")
        if {n for n, _ in ft} & {n for n, *_ in dt}:
            raise FormatError("dirtree has a name that is both a file and a directory")
        return cls(ft, dt)


def _offsets(blob: bytes) -> list[bytes]:
    """Split a non-empty variable-element array into its elements (framing only)."""
    if not blob:
        return []
    w = gv._offset_width(len(blob))
    last = int.from_bytes(blob[-w:], "little")
    count, rem = divmod(len(blob) - last, w)
    if rem or count <= 0:
        raise ValueError("bad framing")
    out = []
    start = 0
    for i in range(count):
        end = int.from_bytes(blob[last + i * w:last + (i + 1) * w], "little")
        if not start <= end <= last:
            raise ValueError("bad framing")
        out.append(blob[start:end])
        start = end
    return out


def _fast_dirtree(data: bytes) -> DirTree | None:
    """Decode by framing arithmetic, then prove normal form (and sorting) by re-encoding
    with the fast encoder. Any doubt returns None so the generic decoder decides."""
    n = len(data)
    w = gv._offset_width(n)
    split = int.from_bytes(data[n - w:], "little")
    if split > n - w:
        return None
    files = []
    for elem in _offsets(data[:split]):
        ew = gv._offset_width(len(elem))
        s_end = int.from_bytes(elem[-ew:], "little")
        if len(elem) - ew - s_end != 32 or elem[s_end - 1] != 0:
            return None
        name = validate_name(elem[:s_end - 1].decode("utf-8"))
        files.append((name, elem[s_end:s_end + 32].hex()))
    dirs = []
    for elem in _offsets(data[split:n - w]):
        ew = gv._offset_width(len(elem))
        s_end = int.from_bytes(elem[-ew:], "little")
        t_end = int.from_bytes(elem[-2 * ew:-ew], "little")
        if t_end - s_end != 32 or len(elem) - 2 * ew - t_end != 32 or elem[s_end - 1] != 0:
            return None
        name = validate_name(elem[:s_end - 1].decode("utf-8"))
        dirs.append((name, elem[s_end:t_end].hex(), elem[t_end:t_end + 32].hex()))
    tree = DirTree(tuple(files), tuple(dirs))
    if len({n for n, _ in files} | {n for n, *_ in dirs}) != len(files) + len(dirs):
        return None
    if tree.encode() != data:
        return None  # not normal form, or not sorted: let the generic decoder say which
    return tree


def _frame_entry(name: bytes, sums: bytes, split: int = 0) -> bytes:
    """``(say)`` or, with ``split``, ``(sayay)``: offsets of non-last members, reversed."""
    body = name + b"\0" + sums
    ends = [len(name) + 1] + ([len(name) + 1 + split] if split else [])
    w = gv._writer_width(len(body), len(ends))
    return body + b"".join(e.to_bytes(w, "little") for e in reversed(ends))


def _frame_array(elems: list[bytes]) -> bytes:
    body = b"".join(elems)
    ends = []
    pos = 0
    for e in elems:
        pos += len(e)
        ends.append(pos)
    w = gv._writer_width(len(body), len(ends))
    return body + b"".join(e.to_bytes(w, "little") for e in ends)


def _name_key(entry: tuple[str, ...]) -> bytes:
    return entry[0].encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------
# commit


@dataclass(frozen=True)
class Commit:
    root_tree: str
    root_meta: str
    metadata: dict[str, Variant] = field(default_factory=dict)
    parent: str | None = None
    subject: str = ""
    body: str = ""
    timestamp: int = 0
    related: tuple[tuple[str, bytes], ...] = ()

    def encode(self) -> bytes:
        return gv.encode(COMMIT_SIG, (
            self.metadata, raw(self.parent) if self.parent else b"", list(self.related),
            self.subject, self.body, bswap64(self.timestamp), raw(self.root_tree),
            raw(self.root_meta)))

    @classmethod
    def decode(cls, data: bytes) -> Commit:
        meta, parent, related, subject, body, ts, tree, dmeta = gv.decode(COMMIT_SIG, data)
        if any(not k for k in meta):
            raise FormatError("commit metadata has an empty key")
        if parent and len(parent) != 32:
            raise FormatError("commit parent is not a 32-byte checksum")
        return cls(hexsum(tree), hexsum(dmeta), meta, parent.hex() if parent else None,
                   subject, body, bswap64(ts), tuple(related))

    @property
    def version(self) -> str | None:
        v = self.metadata.get("version")
        return v.value if v is not None and v.type == "s" else None

    def meta_value(self, key: str) -> Any:
        v = self.metadata.get(key)
        return None if v is None else v.value

    @property
    def content_checksum(self) -> str:
        return hashlib.sha256(raw(self.root_tree) + raw(self.root_meta)).hexdigest()


def decode_metadata_object(objtype: ObjectType, data: bytes) -> None:
    """Raise unless ``data`` is a well-formed commit, dirtree or dirmeta (others: no-op)."""
    if objtype == ObjectType.COMMIT:
        Commit.decode(data)
    elif objtype == ObjectType.DIR_TREE:
        DirTree.decode(data)
    elif objtype == ObjectType.DIR_META:
        DirMeta.decode(data)


def decode_metadata_dict(data: bytes) -> dict[str, Variant]:
    """Detached commit metadata / summary.sig / delta index: ``a{sv}``."""
    return dict(gv.decode("a{sv}", data))


def encode_metadata_dict(meta: dict[str, Variant]) -> bytes:
    return gv.encode("a{sv}", meta)


# ---------------------------------------------------------------------------------------
# sizes (ostree.sizes) varints


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise FormatError("truncated or oversized varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def size_entry(csum: str, archived: int, unpacked: int, objtype: ObjectType) -> bytes:
    return raw(csum) + encode_varint(archived) + encode_varint(unpacked) + bytes([objtype])
