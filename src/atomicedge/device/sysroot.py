"""An ``ostree admin``-compatible sysroot: layout, the deployment list, the boot swap.

On disk (what ostree 2022.7 creates and reads)::

    boot/loader -> loader.N                 N = bootversion, swapped 0 <-> 1 atomically
    boot/loader.N/entries/ostree-<v>-<os>.conf   one BLS entry per deployment
    boot/ostree/<os>-<bootcsum>/vmlinuz-<kver>, initramfs-<kver>.img
    boot/grub/grubenv                       boot counter (greenboot semantics)
    ostree/boot.N -> boot.N.1               ostree/boot.N.1/<os>/<bootcsum>/<bootserial>
                                            -> ../../../deploy/<os>/deploy/<csum>.<serial>
    ostree/deploy/<os>/deploy/<csum>.<serial>[.origin]
    ostree/deploy/<os>/var                  the stateroot's shared /var
    ostree/repo                             bare repo; refs ostree/<N>/1/<index> pin commits

The deployment list *is* the set of entries of the live ``boot/loader``, ordered by
``version`` (highest first = default).  A new list is written completely beside the live one
(``loader.<1-N>``, ``ostree/boot.<1-N>.1``, pin refs) and made live by one ``rename`` of the
``boot/loader`` symlink, so a crash at any point leaves the old or the new list.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from atomicedge.device import bls, faults, grubcfg
from atomicedge.device.origin import Origin
from atomicedge.errors import CorruptionError, NotFoundError, UsageError
from atomicedge.fsutil import atomic_symlink, atomic_write, fsync_dir, syncfs
from atomicedge.ostree.keyfile import KeyFile
from atomicedge.ostree.repo import Repo

DEPLOY_NAME = re.compile(r"^([0-9a-f]{64})\.(\d+)$")
STATEROOT_NAME = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.]*$")
PIN_GROUP = "libostree-transient"


@dataclass
class Deployment:
    osname: str
    csum: str
    serial: int
    bootcsum: str
    bootserial: int = 0
    kargs: tuple[str, ...] = ()
    staged: bool = False

    @property
    def name(self) -> str:
        return f"{self.csum}.{self.serial}"

    @property
    def id(self) -> str:
        return f"{self.osname}-{self.csum}.{self.serial}"

    def same(self, other: Deployment | None) -> bool:
        return other is not None and (self.osname, self.csum, self.serial) == (
            other.osname, other.csum, other.serial)


class Sysroot:
    """A sysroot directory (``/`` on a booted device, ``/sysroot`` in our nspawn boots)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.boot = self.path / "boot"
        self.ostree = self.path / "ostree"
        self.repo_path = self.ostree / "repo"
        self._repo: Repo | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Sysroot:
        s = cls(Path(path))
        if not (s.repo_path / "config").is_file() or not (s.ostree / "deploy").is_dir():
            raise NotFoundError(f"{path} is not an ostree sysroot (no ostree/repo, ostree/deploy)",
                                "create one with: atomicedge device install --sysroot DIR ...")
        return s

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            self._repo = Repo.open(self.repo_path)
        return self._repo

    # -- layout ------------------------------------------------------------------------

    def stateroot(self, osname: str) -> Path:
        return self.ostree / "deploy" / osname

    def deployment_dir(self, d: Deployment) -> Path:
        return self.stateroot(d.osname) / "deploy" / d.name

    def origin_path(self, d: Deployment) -> Path:
        return self.stateroot(d.osname) / "deploy" / f"{d.name}.origin"

    def load_origin(self, d: Deployment) -> Origin:
        return Origin.load(self.origin_path(d))

    @property
    def grubenv_path(self) -> Path:
        return self.boot / "grub" / "grubenv"

    @property
    def state_dir(self) -> Path:
        """atomicedge's own durable state (staged deployment) - see docs/device.md."""
        return self.ostree / "atomicedge"

    def bootversion(self) -> int:
        try:
            target = os.readlink(self.boot / "loader")
        except FileNotFoundError:
            return 0
        except OSError:
            raise CorruptionError(f"{self.boot / 'loader'} is not a symlink") from None
        if target not in ("loader.0", "loader.1"):
            raise CorruptionError(f"{self.boot / 'loader'} points to {target!r}",
                                  "expected loader.0 or loader.1")
        return int(target[-1])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time (ostree uses the same file: ``ostree/lock``)."""
        self.ostree.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.ostree / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading the deployment list ---------------------------------------------------

    def deployments(self) -> list[Deployment]:
        """The live list, default first (staged deployment, if any, is not included)."""
        if not (self.boot / "loader").is_symlink():
            return []
        bv = self.bootversion()
        out = []
        for entry in bls.read_entries(self.boot / f"loader.{bv}" / "entries"):
            out.append(self._from_entry(entry))
        return out

    def _from_entry(self, entry: bls.BootEntry) -> Deployment:
        arg = entry.ostree_arg
        m = OSTREE_ARG_RE.match(arg or "")
        if not m:
            raise CorruptionError(f"boot entry {entry.filename} has no valid ostree= argument")
        _bv, osname, bootcsum, bootserial = m.groups()
        link = self.path / arg.lstrip("/") if arg else self.path
        try:
            target = os.readlink(link)
        except OSError:
            raise CorruptionError(f"boot entry {entry.filename}: {arg} does not resolve",
                                  "the boot configuration is damaged") from None
        dm = DEPLOY_NAME.match(Path(target).name)
        if not dm:
            raise CorruptionError(f"{arg} points to {target!r}, not a deployment")
        return Deployment(osname, dm.group(1), int(dm.group(2)), bootcsum, int(bootserial),
                          tuple(entry.kargs()))

    def is_pinned(self, d: Deployment) -> bool:
        """``[libostree-transient] pinned`` of ``d``'s origin.  An origin that is missing or
        cannot be read is an error, never "not pinned": cleanup would delete a pinned
        deployment on a guess."""
        path = self.origin_path(d)
        hint = (f"restore {path.name} ([origin] refspec=REMOTE:REF, and [{PIN_GROUP}] "
                "pinned=true to keep it pinned); nothing was changed")
        try:
            return KeyFile.load(path).get_bool(PIN_GROUP, "pinned", False)
        except FileNotFoundError:
            raise CorruptionError(f"{path}: origin file is missing, so whether deployment "
                                  f"{d.id} is pinned is unknown", hint) from None
        except CorruptionError as exc:
            raise CorruptionError(f"cannot tell whether deployment {d.id} is pinned: "
                                  f"{exc.message}", hint) from None
        except OSError as exc:
            raise CorruptionError(f"{path}: cannot read the origin file ({exc.strerror}), so "
                                  f"whether deployment {d.id} is pinned is unknown",
                                  hint) from None

    def booted(self, deps: list[Deployment] | None = None) -> Deployment | None:
        """The deployment ``/`` is (only on a running device: ``/run/ostree-booted``)."""
        if not Path("/run/ostree-booted").exists():
            return None
        try:
            root = os.stat("/")
        except OSError:
            return None
        for d in deps if deps is not None else self.deployments():
            try:
                st = os.stat(self.deployment_dir(d))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
                return d
        return None

    # -- writing the deployment list ---------------------------------------------------

    def write_deployments(self, deps: list[Deployment]) -> None:
        """Make ``deps`` the live list: build the other bootversion, then swap one symlink."""
        old_bv = self.bootversion() if (self.boot / "loader").is_symlink() else 0
        new_bv = 1 - old_bv if (self.boot / "loader").is_symlink() else 1
        _assign_bootserials(deps)
        loader = self.boot / f"loader.{new_bv}"
        _rmtree(loader)
        faults.step("rm-stale-loader")
        (loader / "entries").mkdir(parents=True)
        bootdir = self.ostree / f"boot.{new_bv}.1"
        for stale in self.ostree.glob(f"boot.{new_bv}.*"):
            _rmtree(stale)
        faults.step("rm-stale-bootlinks")
        n = len(deps)
        entries = []
        for i, d in enumerate(deps):
            entry = self._entry_for(d, i, n, new_bv)
            entries.append(entry)
            atomic_write(loader / "entries" / bls.entry_filename(n - i, d.osname),
                         entry.encode())
            link = bootdir / d.osname / d.bootcsum / str(d.bootserial)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f"../../../deploy/{d.osname}/deploy/{d.name}", link)
            faults.step("write-entry")
        if grubcfg.enabled(self.boot):  # real GRUB: its menu swaps with the entries
            grubcfg.write(loader, entries, grubcfg.boot_prefix(self.path, self.boot))
        fsync_dir(loader / "entries")
        atomic_symlink(f"boot.{new_bv}.1", self.ostree / f"boot.{new_bv}")
        self._write_pin_refs(new_bv, deps)
        faults.step("pin-refs")
        syncfs(self.path)
        if grubcfg.enabled(self.boot):  # GRUB replays no journal: the new menu, entries and
            grubcfg.checkpoint(self.boot)  # kernels home before the swap (ostree freezes too)
        faults.step("before-swap")
        if not (self.boot / "boot").is_symlink():
            os.symlink(".", self.boot / "boot")
        atomic_symlink(f"loader.{new_bv}", self.boot / "loader")
        if grubcfg.enabled(self.boot):  # GRUB does not replay the journal: write it home
            grubcfg.checkpoint(self.boot)
        faults.step("after-swap")
        self._remove_old_bootversion(old_bv)

    def _entry_for(self, d: Deployment, index: int, n: int, bv: int) -> bls.BootEntry:
        ddir = self.deployment_dir(d)
        kver, _vmlinuz, initramfs = find_kernel(ddir)
        osrel = _read_os_release(ddir)
        version = self.repo.load_commit(d.csum).version if self._has_commit(d.csum) else None
        bootdir = f"/ostree/{d.osname}-{d.bootcsum}"
        options = [*d.kargs, f"ostree=/ostree/boot.{bv}/{d.osname}/{d.bootcsum}/{d.bootserial}"]
        return bls.BootEntry(
            title=bls.title_for(osrel, version, d.osname, index), version=n - index,
            options=options, linux=f"{bootdir}/vmlinuz-{kver}",
            initrd=f"{bootdir}/initramfs-{kver}.img" if initramfs else None)

    def _has_commit(self, csum: str) -> bool:
        from atomicedge.ostree.objects import ObjectType
        return self.repo.has_object(csum, ObjectType.COMMIT)

    def _write_pin_refs(self, bv: int, deps: list[Deployment]) -> None:
        refdir = self.repo_path / "refs" / "heads" / "ostree"
        _rmtree(refdir / str(bv))
        for i, d in enumerate(deps):
            self.repo.set_ref(f"ostree/{bv}/1/{i}", d.csum)
            faults.step("pin-ref-written")

    def remove_other_bootversion(self) -> bool:
        """Remove what an interrupted :meth:`write_deployments` left of the inactive
        bootversion (its ``loader.N``, ``ostree/boot.N*``, pin refs ``ostree/N``), as
        ``ostree admin cleanup`` does; stale pin refs would keep dead commits forever."""
        if not (self.boot / "loader").is_symlink():
            return False
        other = 1 - self.bootversion()
        leftovers = [self.boot / f"loader.{other}", *self.ostree.glob(f"boot.{other}*"),
                     self.repo_path / "refs" / "heads" / "ostree" / str(other)]
        if not any(os.path.lexists(p) for p in leftovers):
            return False
        self._remove_old_bootversion(other)
        return True

    def _remove_old_bootversion(self, old_bv: int) -> None:
        _rmtree(self.boot / f"loader.{old_bv}")
        faults.step("rm-old-loader")
        for p in self.ostree.glob(f"boot.{old_bv}*"):
            _rmtree(p)
            faults.step("old-bootlink-removed")
        _rmtree(self.repo_path / "refs" / "heads" / "ostree" / str(old_bv))
        faults.step("rm-old-bootlinks")


OSTREE_ARG_RE = bls.OSTREE_ARG


def _assign_bootserials(deps: list[Deployment]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for d in deps:
        key = (d.osname, d.bootcsum)
        d.bootserial = seen.get(key, 0)
        seen[key] = d.bootserial + 1


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _read_os_release(root: Path) -> dict[str, str]:
    for rel in ("usr/lib/os-release", "etc/os-release", "usr/etc/os-release"):
        p = root / rel
        if p.is_file() and not p.is_symlink():
            return bls.parse_os_release(p.read_text(errors="replace"))
    return {}


def find_kernel(root: Path) -> tuple[str, Path, Path | None]:
    """``(kver, vmlinuz, initramfs)`` from ``usr/lib/modules/<kver>/`` (ostree's layout)."""
    mods = root / "usr" / "lib" / "modules"
    found = sorted(p for p in mods.glob("*/vmlinuz") if p.is_file()) if mods.is_dir() else []
    if len(found) != 1:
        raise UsageError(f"commit has {len(found)} kernels under usr/lib/modules/*/vmlinuz",
                         "a bootable commit needs exactly one")
    kdir = found[0].parent
    initramfs = kdir / "initramfs.img"
    return kdir.name, found[0], initramfs if initramfs.is_file() else None


def init_fs(path: Path) -> Sysroot:
    """``ostree admin init-fs``: the top-level directories and a bare repo."""
    path.mkdir(parents=True, exist_ok=True)
    for d, mode in (("boot", 0o755), ("dev", 0o755), ("home", 0o755), ("proc", 0o755),
                    ("root", 0o700), ("run", 0o755), ("sys", 0o755), ("tmp", 0o1777),
                    ("ostree/deploy", 0o755)):
        (path / d).mkdir(parents=True, exist_ok=True)
        os.chmod(path / d, mode)
    Repo.init(path / "ostree" / "repo", mode="bare")
    return Sysroot(path)


def os_init(sysroot: Sysroot, osname: str) -> Path:
    """``ostree admin os-init``: the stateroot with its (legacy) ``var`` skeleton."""
    if not STATEROOT_NAME.match(osname):
        raise UsageError(f"invalid --osname {osname!r}", "use letters, digits, '-', '_', '.'")
    root = sysroot.stateroot(osname)
    (root / "deploy").mkdir(parents=True, exist_ok=True)
    var = root / "var"
    for d in ("lib", "log", "tmp"):
        (var / d).mkdir(parents=True, exist_ok=True)
    os.chmod(var / "tmp", 0o1777)
    for name, target in (("run", "../run"), ("lock", "../run/lock")):
        if not (var / name).is_symlink():
            os.symlink(target, var / name)
    return root
