"""``/etc`` of a new deployment, with libostree 2022.7's semantics (ostree-sysroot-deploy.c).

Two steps, each keeping owner, group, mode (setuid/setgid/sticky included) and xattrs, as
``ostree admin deploy`` does:

* :func:`copy_tree` - the new ``etc`` starts as a copy of the deployment's ``usr/etc`` (the
  commit's defaults, with the commit's metadata).
* :func:`merge` - the three-way merge.  :func:`diff` compares the merge deployment's
  ``usr/etc`` (old defaults) with its ``etc`` (the admin's state) by type, owner, group, mode
  and content/link target, ignoring xattrs (ostree ignores them: SELinux labels differ between
  the two trees).  :func:`apply` then, in ostree's order, deletes what the admin removed and
  copies what the admin modified or added - with *its* metadata - over the new defaults.
  Everything else keeps the new defaults.  ostree's corner cases are reproduced on purpose:

  - a modified or added entry's parent directory takes the metadata of the admin's parent
    (ostree's ``ensure_directory_from_template``; ancestors only when they had to be created);
  - a directory whose own owner/mode changed, and that still is a directory in the new
    defaults, is left as the new defaults have it (unless a changed child carries its
    metadata over, as above): ostree "does nothing" for it;
  - a changed file where the new defaults have a directory is an error
    ("newly defaults to directory").

  Where ostree would follow a symlink of the new defaults out of ``/etc`` (a directory with
  local changes that became a symlink), this refuses with an error instead of writing through
  it; a removal below such a symlink is skipped.

Every write goes through ``O_NOFOLLOW`` directory descriptors, one path component at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from atomicedge.errors import UsageError

log = logging.getLogger(__name__)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


@dataclass
class EtcDiff:
    modified: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.modified)} modified, {len(self.removed)} removed, "
                f"{len(self.added)} added")


# -- attributes --------------------------------------------------------------------------

def _xattrs(target: int | str) -> list[tuple[str, bytes]]:
    """All xattrs of an fd, or of a path without following a final symlink."""
    follow = isinstance(target, int)  # an fd is never followed; os refuses the flag for it
    names = sorted(os.listxattr(target, follow_symlinks=follow))
    return [(n, os.getxattr(target, n, follow_symlinks=follow)) for n in names]


def _set_xattrs(target: int | str, xattrs: list[tuple[str, bytes]]) -> None:
    """Set each xattr (existing others are kept, as glnx_fd_set_all_xattrs does)."""
    follow = isinstance(target, int)
    for name, value in xattrs:
        os.setxattr(target, name, value, follow_symlinks=follow)


def _copy_dir_attrs(src_fd: int, dest_fd: int) -> None:
    """xattrs, then owner, then mode (ostree's dirfd_copy_attributes_and_xattrs)."""
    _set_xattrs(dest_fd, _xattrs(src_fd))
    st = os.fstat(src_fd)
    os.fchown(dest_fd, st.st_uid, st.st_gid)
    os.fchmod(dest_fd, stat.S_IMODE(st.st_mode))


def _proc(dir_fd: int, name: str) -> str:
    """A path naming ``name`` in ``dir_fd`` (for the xattr calls, which lack a dir_fd)."""
    return f"/proc/self/fd/{dir_fd}/{name}"


# -- copying -------------------------------------------------------------------------------

def _copy_file(src_dir: int, name: str, st: os.stat_result, dest_dir: int) -> None:
    """A regular file or symlink, metadata kept (glnx_file_copy_at); ``name`` must not exist
    in ``dest_dir`` as a directory."""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=src_dir)
        try:
            os.unlink(name, dir_fd=dest_dir)
        except FileNotFoundError:
            pass
        os.symlink(target, name, dir_fd=dest_dir)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dest_dir, follow_symlinks=False)
        _set_xattrs(_proc(dest_dir, name), _xattrs(_proc(src_dir, name)))
        return
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        dest = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                       | os.O_CLOEXEC, stat.S_IMODE(st.st_mode), dir_fd=dest_dir)
        try:
            while chunk := os.read(src, _CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dest, view):]
            os.fchown(dest, st.st_uid, st.st_gid)       # owner before mode: chown clears suid
            os.fchmod(dest, stat.S_IMODE(st.st_mode))
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
            _set_xattrs(dest, _xattrs(src))
        finally:
            os.close(dest)
    finally:
        os.close(src)


def _copy_dir(src_parent: int, src_name: str, dest_parent: int, dest_name: str) -> None:
    """A directory and everything below it (ostree's copy_dir_recurse): the directory is
    made 0700, gets its xattrs, owner and mode, then its entries are copied."""
    src = os.open(src_name, _DIR, dir_fd=src_parent)
    try:
        try:
            os.mkdir(dest_name, 0o700, dir_fd=dest_parent)
        except FileExistsError:
            pass
        dest = os.open(dest_name, _DIR, dir_fd=dest_parent)
        try:
            _copy_dir_attrs(src, dest)
            for child in sorted(os.listdir(src)):
                st = os.stat(child, dir_fd=src, follow_symlinks=False)
                if not _copy_entry(src, child, st, dest):
                    log.warning("/etc: not copying special file %s", child)
        finally:
            os.close(dest)
    finally:
        os.close(src)


def _copy_entry(src_parent: int, name: str, st: os.stat_result, dest_parent: int) -> bool:
    """Copy ``name`` (stat ``st``) of any kind ostree copies: a directory with all below it, a
    regular file or a symlink. False, and nothing copied, for a special file."""
    if stat.S_ISDIR(st.st_mode):
        _copy_dir(src_parent, name, dest_parent, name)
    elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        _copy_file(src_parent, name, st, dest_parent)
    else:
        return False
    return True


def copy_tree(src: Path, dest: Path) -> None:
    """Copy directory ``src`` to the new path ``dest`` with all metadata (usr/etc -> etc)."""
    sp = os.open(src.parent, _DIR)
    try:
        dp = os.open(dest.parent, _DIR)
        try:
            _copy_dir(sp, src.name, dp, dest.name)
        finally:
            os.close(dp)
    finally:
        os.close(sp)


# -- the diff (read only) ------------------------------------------------------------------

def _same_content(a: Path, b: Path, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if not stat.S_ISREG(sa.st_mode) or (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if sa.st_size != sb.st_size:
        return False
    fa = os.open(a, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fb = os.open(b, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while True:
                ca, cb = os.read(fa, _CHUNK), os.read(fb, _CHUNK)
                if ca != cb:
                    return False
                if not ca:
                    return True
        finally:
            os.close(fb)
    finally:
        os.close(fa)


def _changed(a: Path, b: Path) -> bool:
    """ostree's checksum comparison without xattrs: type, mode, owner, group, content."""
    sa, sb = os.lstat(a), os.lstat(b)
    return ((sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid)
            or not _same_content(a, b, sa, sb))


def diff(orig: Path, modified: Path) -> EtcDiff:
    """What the admin changed: ``orig`` = old ``usr/etc``, ``modified`` = old ``etc``."""
    out = EtcDiff()
    if orig.is_dir():
        _diff_dir(orig, modified, "", out)
    else:
        _added(modified, "", out)
    return out


def _diff_dir(orig: Path, mod: Path, rel: str, out: EtcDiff) -> None:
    orig_names = sorted(os.listdir(orig))
    mod_names = set(os.listdir(mod))
    for name in orig_names:
        o, m, r = orig / name, mod / name, rel + name
        if name not in mod_names:
            out.removed.append(r)
            continue
        om = os.lstat(o).st_mode
        if stat.S_IFMT(om) != stat.S_IFMT(os.lstat(m).st_mode):
            out.modified.append(r)
            continue
        if _changed(o, m):
            out.modified.append(r)
        if stat.S_ISDIR(om):
            _diff_dir(o, m, r + "/", out)
    _added(mod, rel, out, skip=set(orig_names))


def _added(mod: Path, rel: str, out: EtcDiff, skip: set[str] | frozenset[str] = frozenset()
           ) -> None:
    """Entries of ``mod`` not in ``skip``, directories with everything below them."""
    for name in sorted(set(os.listdir(mod)) - skip):
        out.added.append(rel + name)
        if stat.S_ISDIR(os.lstat(mod / name).st_mode):
            _added(mod / name, rel + name + "/", out)


# -- applying the admin's changes ----------------------------------------------------------

def _walk(root: int, rel: str) -> int:
    """An fd of directory ``rel`` below ``root``, never through a symlink (OSError if not)."""
    fd = os.dup(root)
    for part in filter(None, rel.split("/")):
        try:
            nfd = os.open(part, _DIR, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def _not_a_dir(rel: str) -> UsageError:
    return UsageError(f"/etc merge: /etc/{rel} has local changes below it but is not a "
                      "directory in the new version",
                      f"move the local changes below /etc/{rel} elsewhere, then update again")


def _ensure_dir(mod: int, new: int, rel: str) -> int:
    """Directory ``rel`` in the new ``etc``, created as needed; the created ones and ``rel``
    itself take the metadata of the admin's (ostree's ensure_directory_from_template)."""
    parts = rel.split("/")
    fd = os.dup(new)
    try:
        for i, part in enumerate(parts):
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            try:
                nfd = os.open(part, _DIR, dir_fd=fd)
            except OSError:
                raise _not_a_dir("/".join(parts[:i + 1])) from None
            os.close(fd)
            fd = nfd
            if created or i == len(parts) - 1:
                src = _walk(mod, "/".join(parts[:i + 1]))
                try:
                    _copy_dir_attrs(src, fd)
                finally:
                    os.close(src)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(new: int, rel: str) -> None:
    parent, _, name = rel.rpartition("/")
    try:
        pfd = _walk(new, parent)
    except OSError:  # gone with its directory, or below a symlink: nothing of /etc's own
        return
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(pfd)


def _copy_changed(mod: int, new: int, rel: str) -> None:
    """The admin's version of ``rel`` over the new defaults (copy_modified_config_file)."""
    parent, _, name = rel.rpartition("/")
    src_parent = _walk(mod, parent)
    try:
        mst = os.stat(name, dir_fd=src_parent, follow_symlinks=False)
        dest_parent = _ensure_dir(mod, new, parent) if parent else os.dup(new)
        try:
            try:
                nst: os.stat_result | None = os.stat(name, dir_fd=dest_parent,
                                                     follow_symlinks=False)
            except FileNotFoundError:
                nst = None
            if nst is not None and stat.S_ISDIR(nst.st_mode):
                if not stat.S_ISDIR(mst.st_mode):
                    raise UsageError(f"/etc merge: /etc/{rel} was changed locally but the new "
                                     "version makes it a directory",
                                     f"move the local /etc/{rel} elsewhere, then update again")
                return  # ostree leaves a directory that exists on both sides alone
            if nst is not None:
                os.unlink(name, dir_fd=dest_parent)
            if not _copy_entry(src_parent, name, mst, dest_parent):
                log.info("/etc merge: ignoring special file /etc/%s", rel)
        finally:
            os.close(dest_parent)
    finally:
        os.close(src_parent)


def apply(d: EtcDiff, modified: Path, new_etc: Path) -> None:
    """Apply the admin's changes (from ``modified``) onto ``new_etc``: removals first, then
    modified, then added entries (ostree's order)."""
    mod = os.open(modified, _DIR)
    try:
        new = os.open(new_etc, _DIR)
        try:
            for rel in d.removed:
                _remove(new, rel)
            for rel in d.modified + d.added:
                _copy_changed(mod, new, rel)
        finally:
            os.close(new)
    finally:
        os.close(mod)


def merge(old_usr_etc: Path, old_etc: Path, new_etc: Path) -> EtcDiff:
    d = diff(old_usr_etc, old_etc)
    apply(d, old_etc, new_etc)
    return d
