"""Content objects on disk in each repository mode: reading them back and writing them.

``archive`` keeps metadata in the ``.filez`` header and deflates the payload; ``bare`` keeps it
in the inode; ``bare-user`` keeps it in the ``user.ostreemeta`` xattr (and stores symlinks as
regular files holding ``target\\0``). The checksum is the same in every mode.
"""

from __future__ import annotations

import errno
import os
import stat

try:  # ISA-L: 3-5x zlib's deflate, 2x its inflate; raw deflate streams are standard
    from isal import isal_zlib as fast_zlib
except ImportError:  # the device agent in an image runs on Debian's python3, without isal
    import zlib as fast_zlib  # type: ignore[no-redef]

from atomicedge.errors import CorruptionError, NotFoundError
from atomicedge.ostree import objects as ob
from atomicedge.ostree.layout import RepoLayout
from atomicedge.ostree.objects import FileHeader, ObjectType

InflateError: type[Exception] = fast_zlib.error  # type: ignore[assignment]  # stub: instance
OSTREEMETA = "user.ostreemeta"
MAX_CONTENT_SIZE = 1 << 40


def deflate_raw(data: bytes, level: int = 1) -> bytes:
    """Raw deflate (wbits -15): what ostree inflates; level/implementation are ours to pick."""
    c = fast_zlib.compressobj(min(level, 3), fast_zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def inflate_raw(data: bytes, expected_size: int) -> bytes:
    """Inflate at most ``expected_size`` bytes; more or fewer is corruption (bomb-safe)."""
    d = fast_zlib.decompressobj(-15)
    try:
        out = d.decompress(data, expected_size + 1)
    except InflateError as exc:
        raise CorruptionError(f"content payload does not inflate: {exc}") from exc
    if len(out) != expected_size or d.unconsumed_tail or not d.eof:
        raise CorruptionError(f"content payload inflates to a different size than the "
                              f"{expected_size} bytes its header declares")
    return out


def parse_filez(data: bytes) -> tuple[FileHeader, bytes]:
    """Header and uncompressed content of ``.filez`` bytes."""
    h, size, off = ob.parse_archive_header(data)
    if size > MAX_CONTENT_SIZE:
        raise CorruptionError(f"content object declares an absurd size {size}")
    if h.is_symlink:
        if len(data) != off:
            raise CorruptionError("symlink archive object carries a payload")
        return h, b""
    return h, inflate_raw(data[off:], size)


def encode_filez(h: FileHeader, content: bytes, level: int = 1) -> bytes:
    if h.is_symlink:
        return ob.archive_header_bytes(h, 0)
    return ob.archive_header_bytes(h, len(content)) + deflate_raw(content, level)


def load_content(repo: RepoLayout, csum: str) -> tuple[FileHeader, bytes]:
    path = repo.object_path(ob.validate_checksum(csum), ObjectType.FILE)
    try:
        if repo.is_archive:
            with open(path, "rb") as f:
                return parse_filez(f.read())
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotFoundError(f"content object {csum} is missing") from None
    if repo.mode == "bare":
        return _load_bare(path, st)
    if repo.mode == "bare-user":
        uid, gid, mode, xattrs = ob.decode_ostreemeta(
            os.getxattr(path, OSTREEMETA, follow_symlinks=False))
        data = _read(path)
        if stat.S_ISLNK(mode):
            if not data.endswith(b"\0"):
                raise CorruptionError(f"bare-user symlink object {csum} lacks its NUL")
            return FileHeader(uid, gid, mode, os.fsdecode(data[:-1]), xattrs), b""
        return FileHeader(uid, gid, mode, "", xattrs), data
    # bare-user-only: canonical metadata
    if stat.S_ISLNK(st.st_mode):
        return FileHeader(0, 0, st.st_mode, os.readlink(path)), b""
    return FileHeader(0, 0, st.st_mode, ""), _read(path)


def read_xattrs(path: str | os.PathLike[str]) -> ob.Xattrs:
    """All xattrs of ``path`` (not following symlinks), NUL-terminated names, sorted."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    out = []
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise
        out.append((name.encode() + b"\0", value))
    out.sort()
    return tuple(out)


def _load_bare(path: os.PathLike[str] | str, st: os.stat_result) -> tuple[FileHeader, bytes]:
    xattrs = read_xattrs(path)
    if stat.S_ISLNK(st.st_mode):
        return FileHeader(st.st_uid, st.st_gid, st.st_mode, os.readlink(path), xattrs), b""
    return FileHeader(st.st_uid, st.st_gid, st.st_mode, "", xattrs), _read(path)


def _read(path: os.PathLike[str] | str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_object_file(mode: str, path: str, h: FileHeader, content: bytes,
                      level: int = 1) -> None:
    """Create the on-disk form of a content object at ``path`` (which must not exist)."""
    if mode == "archive":
        write_plain(path, encode_filez(h, content, level), 0o644)
    elif mode == "bare":
        _write_bare(path, h, content)
    elif mode == "bare-user":
        if h.is_symlink:
            write_plain(path, os.fsencode(h.symlink_target) + b"\0", 0o644, mtime0=True,
                         xattr=ob.encode_ostreemeta(h.uid, h.gid, h.mode, h.xattrs))
        else:
            perm = (h.mode & 0o775) | stat.S_IRUSR
            write_plain(path, content, perm, mtime0=True,
                         xattr=ob.encode_ostreemeta(h.uid, h.gid, h.mode, h.xattrs))
    else:  # bare-user-only
        if h.is_symlink:
            os.symlink(h.symlink_target, path)
        else:
            write_plain(path, content, h.mode & 0o755, mtime0=True)


def write_plain(path: str, data: bytes, perm: int, *, mtime0: bool = False,
                 xattr: bytes | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if xattr is not None:
            os.setxattr(fd, OSTREEMETA, xattr)
        os.fchmod(fd, perm)
        if mtime0:
            os.utime(fd, ns=(0, 0))
    finally:
        os.close(fd)


def _write_bare(path: str, h: FileHeader, content: bytes) -> None:
    if h.is_symlink:
        os.symlink(h.symlink_target, path)
        os.chown(path, h.uid, h.gid, follow_symlinks=False)
        for name, value in h.xattrs:
            os.setxattr(path, name[:-1], value, follow_symlinks=False)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fchown(fd, h.uid, h.gid)
        os.fchmod(fd, stat.S_IMODE(h.mode))
        for name, value in h.xattrs:
            os.setxattr(fd, name[:-1], value)
        os.utime(fd, ns=(0, 0))
    finally:
        os.close(fd)
