"""``/etc`` three-way merge with ostree's semantics.

Inputs: the merge deployment's ``usr/etc`` (old defaults), its ``etc`` (the admin's state) and
the new deployment's ``etc`` (initialised as a copy of the new ``usr/etc``).  Whatever the
admin changed relative to the old defaults wins: modified files/dirs/symlinks are copied over
the new defaults, added ones are copied in, deleted ones are deleted.  Untouched files follow
the new defaults.  Only the new deployment's ``etc`` is written.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EtcDiff:
    modified: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.modified)} modified, {len(self.removed)} removed, "
                f"{len(self.added)} added")


def _same(a: Path, b: Path) -> bool:
    sa, sb = os.lstat(a), os.lstat(b)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
            return True
        return sa.st_size == sb.st_size and filecmp.cmp(a, b, shallow=False)
    return True


def diff(orig: Path, modified: Path) -> EtcDiff:
    """What the admin changed: ``orig`` = old ``usr/etc``, ``modified`` = old ``etc``."""
    out = EtcDiff()
    _diff_dir(orig, modified, "", out)
    return out


def _diff_dir(orig: Path, mod: Path, rel: str, out: EtcDiff) -> None:
    try:
        orig_names = set(os.listdir(orig))
    except FileNotFoundError:
        orig_names = set()
    mod_names = set(os.listdir(mod))
    for name in sorted(orig_names - mod_names):
        out.removed.append(rel + name)
    for name in sorted(mod_names):
        o, m, r = orig / name, mod / name, rel + name
        if name not in orig_names:
            out.added.append(r)
            continue
        om, mm = os.lstat(o).st_mode, os.lstat(m).st_mode
        if stat.S_ISDIR(om) and stat.S_ISDIR(mm):
            if (om, os.lstat(o).st_uid) != (mm, os.lstat(m).st_uid):
                out.modified.append(r)  # metadata change of the dir itself
            _diff_dir(o, m, r + "/", out)
        elif not _same(o, m):
            out.modified.append(r)


def _copy(src: Path, dest: Path) -> None:
    """Replace ``dest`` with a copy of ``src`` (file, symlink or whole dir), keeping modes."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        if src.is_dir() and not src.is_symlink():
            st = os.lstat(src)
            os.chmod(dest, stat.S_IMODE(st.st_mode))
            os.lchown(dest, st.st_uid, st.st_gid)
            return
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dest)
        st = os.lstat(src)
        os.lchown(dest, st.st_uid, st.st_gid)
    elif src.is_dir():
        shutil.copytree(src, dest, symlinks=True, copy_function=_copy_file)
    else:
        _copy_file(str(src), str(dest))


def _copy_file(src: str, dest: str) -> str:
    shutil.copy2(src, dest, follow_symlinks=False)
    st = os.lstat(src)
    os.lchown(dest, st.st_uid, st.st_gid)
    return dest


def apply(d: EtcDiff, modified: Path, new_etc: Path) -> None:
    """Apply the admin's changes (from ``modified``) onto ``new_etc``."""
    for rel in d.removed:
        target = new_etc / rel
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
    for rel in d.modified + d.added:
        _copy(modified / rel, new_etc / rel)


def merge(old_usr_etc: Path, old_etc: Path, new_etc: Path) -> EtcDiff:
    d = diff(old_usr_etc, old_etc)
    apply(d, old_etc, new_etc)
    return d
