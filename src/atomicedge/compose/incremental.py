"""Incremental package trees: apt inside a copy of a cached tree instead of a new mmdebstrap.

When a blueprint's resolved package set only *adds* packages to, or *changes the versions* of
packages in, a cached tree's set (same distro, suite, arch, profile and apt sources; the
tree's explicitly requested packages a subset of the new ones), the new tree is built by
installing the difference into a copy of the cached one, the way mmdebstrap installs its
"remaining packages": apt-get on the outside with the tree as its ``Dir`` and dpkg chrooted
into it (``DPkg::Chroot-Directory``), /proc and /sys mounted and daemons blocked by the same
policy-rc.d and start-stop-daemon stand-ins, then mmdebstrap's cleanup (apt caches, the logs of
its reproducibility list, /etc/machine-id, /run, /tmp) and ours (dpkg's ``*-old`` backups).
It runs in a private mount namespace (mounts vanish with it) and, for a local ``file://``
repository, without any network.

The result must equal a clean build; every way it could not is checked, and any failure
refuses the shortcut (``Refused``) so the caller builds from scratch instead:

* every installed package (dpkg status) is in the resolved set at its resolved version,
  nothing the base had is lost and every requested package is there;
* pre-existing files under /etc that a maintainer script rewrote in place (accounts appended to
  /etc/passwd, a shell to /etc/shells, ...) depend on install order: refused, unless the file
  belongs to an added/changed package or is regenerated from the whole tree (``REGENERATED``);
* the copy shares inodes with the cached tree outside /etc and /var (hard links): a file
  written in place there would have changed the cache, so it is detected, the base is
  reported as ``BaseTainted`` (the caller drops it) and the build refused;
* an initramfs in the base is rebuilt (mmdebstrap's customize hook, ``INITRAMFS_HOOK``) when an
  added/changed package ships files the initramfs holds or that decide what it holds (kernel
  modules, firmware, dracut modules and config, udev) or a binary a dracut module's ``check()``
  looks for, or when the base was built with another dracut configuration (mmdebstrap's
  ``DRACUT_CONF``, rewritten into the copy first); otherwise the base's initramfs is what a
  clean build would have produced.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from atomicedge import runner as tool
from atomicedge.compose.apt import AptState
from atomicedge.compose.cache import TreeCache, TreeMeta, installed
from atomicedge.compose.mmdebstrap import (
    DRACUT_CONF,
    DRACUT_CONF_FILE,
    INITRAMFS_HOOK,
    drop_backups,
)
from atomicedge.errors import AtomicEdgeError, ToolError

# files under /etc rebuilt from the whole tree by triggers, independent of install order
REGENERATED = frozenset({"etc/ld.so.cache", "etc/ssl/certs/ca-certificates.crt"})
# mmdebstrap's run_cleanup "reproducible" list
REPRODUCIBLE_CLEANUP = ("var/log/dpkg.log", "var/log/apt/history.log", "var/log/apt/term.log",
                        "var/log/alternatives.log", "var/cache/ldconfig/aux-cache",
                        "var/log/apt/eipp.log.xz", "var/lib/dbus/machine-id")
# paths whose content decides what dracut puts into a generic initramfs
INITRAMFS_INPUTS = ("boot/", "usr/lib/modules/", "usr/lib/firmware/", "usr/lib/dracut/",
                    "etc/dracut.conf.d/", "usr/lib/udev/", "etc/udev/", "etc/modprobe.d/",
                    "usr/lib/modprobe.d/", "etc/modules-load.d/", "usr/lib/modules-load.d/")
USRMERGE = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
ENV = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true",
       "LC_ALL": "C.UTF-8", "LANGUAGE": "C.UTF-8", "LANG": "C.UTF-8", "INITRD": "No"}
SCRIPT = r'''set -e
t="$1"; shift
mount -t proc proc "$t/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sys "$t/sys"
if [ -n "$AE_REPO" ]; then mount -o ro,bind "$AE_REPO" "$t$AE_REPO"; fi
if [ -n "$AE_HOOK" ]; then exec env -u TMPDIR -u APT_CONFIG sh -c "$AE_HOOK" hook "$t"; fi
apt-get -q -o Dir::Bin::dpkg=env -o DPkg::Options::=--unset=TMPDIR -o DPkg::Options::=dpkg \
  -o "DPkg::Chroot-Directory=$t" --yes install "$@"
if [ -n "$AE_AUTO" ]; then apt-mark auto $AE_AUTO >/dev/null; fi
'''


_LS_LINE = re.compile(r"^([-dlcbps][-rwxsStT]{9})\s.*?\s[A-Z][a-z]{2}\s+\d{1,2}\s+"
                      r"(?:\d{4}|\d{2}:\d{2})\s(.+)$")


class Refused(AtomicEdgeError):
    """The incremental shortcut cannot guarantee a clean build's tree: build from scratch."""


class BaseTainted(Refused):
    """The build wrote through a hard link into the cached base tree: that base is spoiled."""


@dataclass(frozen=True)
class Plan:
    base: str                        # cache key of the base tree
    install: tuple[str, ...]         # apt-get install arguments
    added: tuple[str, ...]           # package names new in the set
    changed: tuple[str, ...]         # package names whose version changes
    auto: tuple[str, ...]            # changed packages apt must keep marked automatic

    def describe(self) -> str:
        shown = ", ".join(_name(s) for s in self.install[:4])
        return shown + (f" +{len(self.install) - 4}" if len(self.install) > 4 else "")


def _name(spec: str) -> str:
    return spec.split("=", 1)[0]


def plan(entries: Iterable[tuple[str, TreeMeta]], want: TreeMeta) -> Plan | None:
    """The cached tree needing the fewest installs to become ``want`` (pure), or None."""
    best: Plan | None = None
    want_pkgs = {p[0]: p[1] for p in want.packages}
    want_inc = {_name(s) for s in want.includes}
    for key, meta in entries:
        have = {p[0]: p[1] for p in meta.packages}
        have_inc = {_name(s) for s in meta.includes}
        if not meta.same_target(want) or not have.keys() <= want_pkgs.keys() \
                or not have_inc <= want_inc or have == want_pkgs:
            continue
        added = sorted(want_pkgs.keys() - have.keys())
        changed = sorted(n for n in have if have[n] != want_pkgs[n])
        if best is not None and len(added) + len(changed) >= \
                len(best.added) + len(best.changed):
            continue
        new_inc = [s for s in want.includes if _name(s) not in have_inc]
        pinned = [f"{n}={want_pkgs[n]}" for n in changed]
        auto = tuple(n for n in changed if n not in want_inc)
        best = Plan(key, tuple(dict.fromkeys(new_inc + pinned)), tuple(added), tuple(changed),
                    auto)
    return best


def _snapshot(tree: Path, top: str | None = None) -> dict[str, tuple[int, int, int]]:
    """rel path -> (inode, size, mtime_ns) of regular files, under ``top`` or outside etc/var."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(tree / top if top else tree):
        rel_dir = os.path.relpath(dirpath, tree)
        if top is None and rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in ("etc", "var", "proc", "sys")]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _normalize(path: str) -> str:
    rel = path.lstrip("/")
    head, _, rest = rel.partition("/")
    return f"{USRMERGE[head]}/{rest}" if head in USRMERGE and rest else rel


def owned_files(tree: Path, names: Iterable[str]) -> set[str]:
    """Files (relative, usrmerge-normalized; no directories) dpkg lists for ``names``."""
    info = tree / "var/lib/dpkg/info"
    out: set[str] = set()
    for name in names:
        for lst in list(info.glob(f"{name}.list")) + list(info.glob(f"{name}:*.list")):
            out.update(_normalize(line) for line in lst.read_text().splitlines()
                       if line and not os.path.isdir(tree / _normalize(line)))
    return out


def _fakes(tree: Path) -> None:
    """mmdebstrap's stand-ins: no daemon starts while maintainer scripts run."""
    policy = tree / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    ssd = tree / "sbin/start-stop-daemon"
    if ssd.is_file():
        os.rename(ssd, tree / "sbin/start-stop-daemon.REAL")
        ssd.write_text('#!/bin/sh\necho "Warning: Fake start-stop-daemon called, doing'
                       ' nothing">&2\n')
        ssd.chmod(0o755)


def _unfake(tree: Path) -> None:
    (tree / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    real = tree / "sbin/start-stop-daemon.REAL"
    if real.exists():
        os.replace(real, tree / "sbin/start-stop-daemon")


def cleanup(tree: Path) -> None:
    """mmdebstrap's run_cleanup: apt caches, its reproducibility list, machine-id, /run, /tmp."""
    cache = tree / "var/cache/apt"
    for deb in (cache / "archives").glob("*.deb"):
        deb.unlink()
    for leftover in (cache / "archives/partial").glob("*"):
        leftover.unlink()
    for name in ("pkgcache.bin", "srcpkgcache.bin"):
        (cache / name).unlink(missing_ok=True)
    for rel in REPRODUCIBLE_CLEANUP:
        (tree / rel).unlink(missing_ok=True)
    drop_backups(tree)
    mid = tree / "etc/machine-id"
    if mid.exists():
        mid.unlink()
        mid.touch(mode=0o644)
    for top, keep in (("run", {"lock"}), ("tmp", set())):
        for entry in (tree / top).iterdir():
            if entry.name not in keep:
                tool.run(["rm", "-rf", "--one-file-system", str(entry)], what=f"clean /{top}")


def _sandbox_user(tree: Path) -> str:
    """mmdebstrap's rule: apt downloads as _apt unless _apt cannot read into the tree (a
    private parent directory), then as root — which decides who owns archives/partial."""
    probe = tool.run(["/usr/lib/apt/apt-helper", "drop-privs", "--", "test", "-r",
                      str(tree / "var/lib/apt/lists/partial")], what="apt-helper", check=False)
    return "" if probe.returncode == 0 else 'APT::Sandbox::User "root";\n'


def _apt_config(tree: Path, state: AptState) -> str:
    trusted = tool.run(["apt-config", "shell", "v", "Dir::Etc::trusted/f"],
                       what="apt-config").stdout.partition("'")[2].rstrip("'\n")
    parts = tool.run(["apt-config", "shell", "v", "Dir::Etc::trustedparts/d"],
                     what="apt-config").stdout.partition("'")[2].rstrip("'\n")
    return (f'Apt::Architecture "{state.arch}";\nApt::Architectures "{state.arch}";\n'
            f'Dir "{tree}";\nDir::State::Status "{tree}/var/lib/dpkg/status";\n'
            f'Dir::Etc::Trusted "{trusted}";\nDir::Etc::TrustedParts "{parts}";\n'
            'pkgCacheGen::ForceEssential ",";\n'
            # the lists of depsolve's own apt state: the same sources, no second download
            f'Dir::State::lists "{state.dir}/lists/";\n'
            'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
            'Apt::Install-Recommends "false";\nAcquire::Languages "none";\n'
            + _sandbox_user(tree))


def _cpio_names(data: bytes, pos: int = 0) -> tuple[list[str], int]:
    """Names in a newc cpio archive starting at ``pos``; returns (names, offset after it)."""
    names = []
    while data.startswith(b"070701", pos):
        filesize, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode(errors="replace")
        pos = (pos + 110 + namesize + 3) & ~3
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append(name)
    return names, pos


def _initramfs_files(tree: Path) -> set[str] | None:
    """Paths inside the initramfs the build made (None: no dracut, so no hook-made image).
    gzip (dracut's default here) is read directly, any other compression through lsinitrd."""
    images = sorted((tree / "boot").glob("initrd.img-*")) if (tree / "boot").is_dir() else []
    if not images or not (tree / "usr/bin/dracut").exists():
        return None
    data = images[0].read_bytes()
    names, pos = _cpio_names(data)           # an uncompressed early cpio (microcode), if any
    while pos < len(data) and data[pos] == 0:
        pos += 1
    if data.startswith(b"\x1f\x8b", pos):
        names += _cpio_names(zlib.decompress(data[pos:], wbits=31))[0]
    elif pos < len(data):
        proc = tool.run(["chroot", str(tree), "lsinitrd", f"/boot/{images[0].name}"],
                        what="lsinitrd", env={**os.environ, **ENV})
        names += [m.group(2).split(" -> ")[0] for m in map(_LS_LINE.match,
                                                            proc.stdout.splitlines()) if m]
    return {_normalize(n) for n in names if n not in (".", "")}


def _dracut_check_words(tree: Path) -> set[str]:
    """Words in the ``check()`` functions of the tree's dracut modules (binaries they probe)."""
    words: set[str] = set()
    for setup in (tree / "usr/lib/dracut/modules.d").glob("*/module-setup.sh"):
        m = re.search(r"^check\(\)\s*\{(.*?)^\}", setup.read_text(errors="replace"), re.S | re.M)
        if m:
            words.update(re.findall(r"[A-Za-z0-9_.+-]+", m.group(1)))
    return words


def initramfs_affected(tree: Path, changed_files: set[str], in_image: set[str]) -> str | None:
    """Why the initramfs must be rebuilt for these new/changed package files, or None."""
    words = _dracut_check_words(tree)
    for path in sorted(changed_files):
        if path.startswith(INITRAMFS_INPUTS):
            return f"{path} is an initramfs input"
        if path in in_image:
            return f"{path} is in the initramfs"
        parent, _, base = path.rpartition("/")
        if parent in ("usr/bin", "usr/sbin") and base in words:
            return f"a dracut module checks for {base}"
    return None


def sync_dracut_conf(tree: Path) -> str | None:
    """Give ``tree`` the current dracut configuration (what mmdebstrap's essential hook writes in
    a clean build); returns why the initramfs must be rebuilt when the tree had another one."""
    conf = tree / DRACUT_CONF_FILE
    if conf.is_file() and not conf.is_symlink() and conf.read_text() == DRACUT_CONF:
        return None
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.unlink(missing_ok=True)   # never through a link into the cached tree
    conf.write_text(DRACUT_CONF)
    conf.chmod(0o644)
    return f"the base was built with another /{DRACUT_CONF_FILE}"


def rebuild_initramfs(tree: Path) -> None:
    """Run dracut in ``tree`` again, as mmdebstrap's customize hook does (``INITRAMFS_HOOK``, a
    private mount namespace with /proc and /sys). The old image is unlinked first: dracut copies
    over its output in place, and it may be a hard link into a cached tree."""
    for old in (tree / "boot").glob("initrd.img-*"):
        old.unlink()
    env = {**os.environ, **ENV, "AE_REPO": "", "AE_AUTO": "", "AE_HOOK": INITRAMFS_HOOK}
    tool.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT, "hook",
              str(tree)], env=env, what="initramfs rebuild (dracut)", timeout=1800)


def _etc_contents(tree: Path) -> dict[str, str]:
    """rel path -> sha256 of every regular file under /etc (a few MB)."""
    out = {}
    for rel in _snapshot(tree, "etc"):
        out[rel] = hashlib.sha256((tree / rel).read_bytes()).hexdigest()
    return out


def _changed_etc(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files that existed before and now have other content (rewritten in place or not)."""
    return sorted(p for p, v in before.items() if p in after and after[p] != v)


def build(state: AptState, p: Plan, want: TreeMeta, target: Path,
          copy: Callable[[Path], None]) -> str:
    """Build ``want`` at ``target`` from the plan's base tree; returns a note for the log.

    ``copy(target)`` makes the working copy (hard links, real /etc and /var). Raises Refused
    (target left for the caller to delete) when the result could differ from a clean build."""
    copy(target)
    conf_changed = sync_dracut_conf(target)
    shared = _snapshot(target)
    base = installed(target)
    old_files = owned_files(target, p.changed)
    etc_before = _etc_contents(target)
    in_image = _initramfs_files(target)
    apt_conf = target / "tmp" / "atomicedge-apt.conf"
    apt_conf.write_text(_apt_config(target, state))
    repo = str(state.sources.offline_dir or "")
    if repo:
        (target / repo.lstrip("/")).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ENV, "TMPDIR": str(target / "tmp"), "APT_CONFIG": str(apt_conf),
           "AE_REPO": repo, "AE_AUTO": " ".join(p.auto), "AE_HOOK": ""}
    reason = None
    _fakes(target)
    try:
        ns = ["unshare", "--mount", "--propagation", "private"] + (["--net"] if repo else [])
        tool.run([*ns, "sh", "-c", SCRIPT, "apt", str(target), *p.install], env=env,
                 what="apt-get install into the cached tree",
                 hint="see the apt error above; --no-cache builds from scratch")
        new = {n for n, _, _ in installed(target) - base}
        new_files = owned_files(target, new) | old_files
        reason = (conf_changed or initramfs_affected(target, new_files, in_image)) \
            if in_image is not None else None
        if reason:
            rebuild_initramfs(target)
    finally:
        _unfake(target)
    cleanup(target)
    _verify(target, want, base, shared, etc_before, new_files)
    return f"initramfs rebuilt: {reason}" if reason else "initramfs kept"


def _verify(target: Path, want: TreeMeta, base: set[tuple[str, str, str]],
            shared: dict[str, tuple[int, int, int]],
            etc_before: dict[str, str], new_files: set[str]) -> None:
    got = installed(target)
    names = {n for n, _, _ in got}
    stray = sorted(f"{n}={v}" for n, v, _ in got - {tuple(p) for p in want.packages})
    lost = sorted({n for n, _, _ in base} - names) + \
        sorted(_name(s) for s in want.includes if _name(s) not in names)
    if stray or lost:
        raise Refused(f"apt's result is not the resolved set (not resolved: {stray[:5]}, "
                      f"missing: {lost[:5]})")
    after = _snapshot(target)
    spoiled = [rel for rel, (ino, size, mtime) in shared.items()
               if rel in after and after[rel][0] == ino and after[rel] != (ino, size, mtime)]
    if spoiled:
        raise BaseTainted(f"{spoiled[0]} was written in place through a hard link")
    edited = [rel for rel in _changed_etc(etc_before, _etc_contents(target))
              if rel not in REGENERATED and rel not in new_files]
    if edited:
        raise Refused(f"a maintainer script edited /{edited[0]} in place (order-dependent)")


class _Steps(Protocol):
    def step(self, name: str) -> AbstractContextManager[None]: ...

    def note(self, text: str) -> None: ...


def from_cache(trees: TreeCache, key: str, state: AptState, want: TreeMeta,
               steps: _Steps) -> bool:
    """Build tree ``key`` incrementally from the best cached base; False when there is none or
    the shortcut was refused (the caller then runs mmdebstrap)."""
    p = plan(trees.entries(), want)
    if p is None:
        return False
    notes: list[str] = []

    def builder(tmp: Path) -> None:
        notes.append(build(state, p, want, tmp,
                           lambda dest: trees.working_copy(p.base, dest, real=("etc", "var"))))

    try:
        with steps.step(f"apt into cached tree {p.base[:12]} ({p.describe()})"):
            trees.build(key, builder, want)
    except BaseTainted as exc:
        trees.forget(p.base)
        steps.note(f"cached tree {p.base[:12]} dropped ({exc}); building from scratch")
        return False
    except (Refused, ToolError) as exc:
        steps.note(f"incremental build refused ({exc.message}); building from scratch")
        return False
    steps.note(notes[0])
    return True
