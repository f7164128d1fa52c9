"""Executing static delta parts: the opcode interpreter and bspatch (ostree's format).

A part is a little program over a blob: each ``S``/``c`` produces the next object of the
part header's list. Every produced object is re-hashed and must equal the checksum the
header names before it is written, so a hostile part can waste CPU but never store a wrong
object. Offsets and sizes are bounds-checked against the blob, so memory stays bounded by
the (capped) part size and the declared object sizes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from atomicedge.delta import format as df
from atomicedge.delta.bsdiff import bspatch
from atomicedge.errors import CorruptionError, FormatError
from atomicedge.ostree import objects as ob
from atomicedge.ostree.objects import FileHeader, ObjectType
from atomicedge.ostree.repo import Repo

MAX_OBJECT = 4 * 1024 * 1024 * 1024


@dataclass
class _State:
    repo: Repo
    part: df.PartPayload
    objects: list[tuple[ObjectType, str]]
    pos: int = 0
    index: int = 0
    source: bytes | None = None
    header: FileHeader | None = None
    size: int = 0
    buf: bytearray = field(default_factory=bytearray)


class PartRunner:
    """Runs one part; ``emit`` gets each verified object."""

    def __init__(self, repo: Repo, part: df.PartPayload,
                 objects: list[tuple[ObjectType, str]]) -> None:
        self.st = _State(repo, part, objects)
        self.out: list[tuple[ObjectType, str, Any]] = []

    def varint(self) -> int:
        v, self.st.pos = ob.decode_varint(self.st.part.ops, self.st.pos)
        return v

    def blob(self, off: int, length: int) -> bytes:
        b = self.st.part.blob
        if off < 0 or length < 0 or off + length > len(b):
            raise CorruptionError("delta op reads outside the part's blob")
        return b[off:off + length]

    def next_object(self) -> tuple[ObjectType, str]:
        if self.st.index >= len(self.st.objects):
            raise CorruptionError("delta part produces more objects than it lists")
        return self.st.objects[self.st.index]

    def header(self, mode_idx: int, xattr_idx: int) -> FileHeader:
        p = self.st.part
        if mode_idx >= len(p.modes) or xattr_idx >= len(p.xattrs):
            raise CorruptionError("delta op names a mode or xattr set the part lacks")
        uid, gid, mode = p.modes[mode_idx]
        return FileHeader(uid, gid, mode, "", p.xattrs[xattr_idx])

    def run(self, emit: Any) -> None:
        ops = self.st.part.ops
        handlers = {ord("S"): self.op_splice, ord("o"): self.op_open, ord("w"): self.op_write,
                    ord("r"): self.op_set_source, ord("R"): self.op_unset_source,
                    ord("c"): self.op_close, ord("B"): self.op_bspatch}
        while self.st.pos < len(ops):
            op = ops[self.st.pos]
            self.st.pos += 1
            handler = handlers.get(op)
            if handler is None:
                raise FormatError(f"unknown delta opcode {op!r}")
            produced = handler()
            if produced is not None:
                emit(*produced)
        if self.st.index != len(self.st.objects):
            raise CorruptionError(f"delta part produced {self.st.index} of "
                                  f"{len(self.st.objects)} objects")

    def op_splice(self) -> tuple[ObjectType, str, Any]:
        objtype, csum = self.next_object()
        if objtype.is_meta:
            length, off = self.varint(), self.varint()
            data = self.blob(off, length)
            if hashlib.sha256(data).hexdigest() != csum:
                raise CorruptionError(f"delta produced a wrong {objtype.ext} for {csum}")
            self.st.index += 1
            return objtype, csum, data
        mode_idx, xattr_idx, size, off = (self.varint() for _ in range(4))
        h = self.header(mode_idx, xattr_idx)
        data = self.blob(off, size)
        if h.is_symlink:
            h = FileHeader(h.uid, h.gid, h.mode, data.decode("utf-8", "surrogateescape"),
                           h.xattrs)
            data = b""
        return self._finish_content(csum, h, data)

    def _finish_content(self, csum: str, h: FileHeader,
                        data: bytes) -> tuple[ObjectType, str, Any]:
        try:
            h.validate()
        except FormatError as exc:
            raise CorruptionError(f"delta content object {csum}: {exc.message}") from None
        if ob.content_checksum(h, data) != csum:
            raise CorruptionError(f"delta produced wrong content for {csum}")
        self.st.index += 1
        return ObjectType.FILE, csum, (h, data)

    def op_open(self) -> None:
        objtype, _csum = self.next_object()
        if objtype != ObjectType.FILE or self.st.header is not None:
            raise CorruptionError("delta 'open' op in the wrong place")
        mode_idx, xattr_idx, size = self.varint(), self.varint(), self.varint()
        if size > MAX_OBJECT:
            raise CorruptionError(f"delta object declares {size} bytes, over the cap")
        self.st.header, self.st.size = self.header(mode_idx, xattr_idx), size
        self.st.buf = bytearray()

    def op_write(self) -> None:
        length, off = self.varint(), self.varint()
        if self.st.header is None:
            raise CorruptionError("delta 'write' op without an open object")
        if self.st.source is not None:
            src = self.st.source
            if off + length > len(src):
                raise CorruptionError("delta 'write' reads past its source object")
            chunk = src[off:off + length]
        else:
            chunk = self.blob(off, length)
        if len(self.st.buf) + len(chunk) > self.st.size:
            raise CorruptionError("delta writes more bytes than the object declares")
        self.st.buf += chunk

    def op_set_source(self) -> None:
        src_csum = ob.hexsum(self.blob(self.varint(), 32))
        h, content = self.st.repo.load_content(src_csum)
        if h.is_symlink:
            raise CorruptionError("delta read source is a symlink")
        self.st.source = content

    def op_unset_source(self) -> None:
        self.st.source = None

    def op_bspatch(self) -> None:
        off, length = self.varint(), self.varint()
        if self.st.header is None or self.st.source is None:
            raise CorruptionError("delta 'bspatch' op without an open object and a source")
        self.st.buf = bytearray(bspatch(self.st.source, self.blob(off, length),
                                               self.st.size))

    def op_close(self) -> tuple[ObjectType, str, Any]:
        h = self.st.header
        if h is None:
            raise CorruptionError("delta 'close' op without an open object")
        if len(self.st.buf) != self.st.size:
            raise CorruptionError("delta object is shorter than declared")
        _t, csum = self.next_object()
        self.st.header = None
        data, self.st.buf = bytes(self.st.buf), bytearray()
        return self._finish_content(csum, h, data)


def decode_part(part_file: bytes, header: df.PartHeader, *,
                check_digest: bool = True) -> df.PartPayload:
    """Verify and decompress a part (thread-safe, releases the GIL while inflating)."""
    if check_digest and hashlib.sha256(part_file).hexdigest() != header.checksum:
        raise CorruptionError(f"delta part {header.checksum} has a different checksum")
    cap = min(header.usize * 2 + (1 << 24), df.MAX_PART_UNCOMPRESSED)
    return df.parse_part(df.decompress_part(part_file, cap))


def run_part(repo: Repo, tx: Any, payload: df.PartPayload, header: df.PartHeader) -> int:
    """Execute a decoded part into transaction ``tx``; returns the number of new objects."""
    written = 0

    def emit(objtype: ObjectType, csum: str, value: Any) -> None:
        nonlocal written
        if tx.has(csum, objtype):
            return
        if objtype == ObjectType.FILE:
            h, data = value
            tx.write_content_trusted(csum, h, data)
        else:
            ob.decode_metadata_object(objtype, value)
            tx.write_metadata(objtype, value, expected=csum)
        written += 1

    PartRunner(repo, payload, header.objects).run(emit)
    return written


def apply_part(repo: Repo, tx: Any, part_file: bytes, header: df.PartHeader,
               *, check_digest: bool = True) -> int:
    """Verify, decompress and execute one part into transaction ``tx``."""
    return run_part(repo, tx, decode_part(part_file, header, check_digest=check_digest),
                    header)

