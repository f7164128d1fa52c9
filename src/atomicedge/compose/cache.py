"""Content-addressed cache of installed package trees (the output of mmdebstrap).

Key = sha256 of (cache format, dracut configuration, distro/suite/arch, profile, the sources'
Release file hashes, the mmdebstrap include list, the resolved package set). If any input
changes — a security update lands in the mirror, a package is added — the key changes and the
tree is built again: from scratch by mmdebstrap, or, when a cached tree holds a subset of the
new package set, by apt inside a copy of that tree (``incremental.py``). Otherwise a recompose
copies the cached tree.

Next to each tree, ``<key>.json`` records what it holds (sources, includes, packages): that is
how a base for an incremental build is found. Trees are built in ``<key>.tmp-<pid>`` and
renamed into place after their record is written, so a killed build never leaves a half tree
under a valid key. A working copy is made with hard links for everything except /etc (which
every customization edits); the customization steps never write through an existing inode
outside /etc, so the cached tree stays pristine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.depsolve import Resolution
from atomicedge.compose.mmdebstrap import DRACUT_CONF, remove_tree
from atomicedge.fsutil import atomic_write

FORMAT = 2   # 2: dpkg's *-old backups dropped (mmdebstrap.drop_backups)


def default_root() -> Path:
    return Path(os.environ.get("ATOMICEDGE_CACHE", "/var/tmp/atomicedge-cache")) / "compose"


def tree_key(distro: str, suite: str, arch: str, res: Resolution) -> str:
    # the dracut configuration decides the tree's initramfs: a change builds new trees
    blob = json.dumps({"format": FORMAT, "dracut": DRACUT_CONF, "distro": distro,
                       "suite": suite, "arch": arch,
                       "profile": res.profile, "release": res.release_hashes,
                       "includes": res.includes, "packages": res.packages}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class TreeMeta:
    """What a cached tree holds: enough to decide whether it can be the base of another."""

    distro: str
    suite: str
    arch: str
    profile: str
    sources: str                                     # Sources.key (the apt state it came from)
    includes: tuple[str, ...]
    packages: tuple[tuple[str, str, str], ...]       # resolved set, or installed set if cached

    @classmethod
    def of(cls, distro: str, suite: str, arch: str, sources: str, res: Resolution) -> TreeMeta:
        return cls(distro, suite, arch, res.profile, sources, tuple(res.includes),
                   tuple(tuple(p) for p in res.packages))  # type: ignore[misc]

    def same_target(self, other: TreeMeta) -> bool:
        return (self.distro, self.suite, self.arch, self.profile, self.sources) == \
            (other.distro, other.suite, other.arch, other.profile, other.sources)

    @classmethod
    def load(cls, path: Path) -> TreeMeta | None:
        try:
            raw = json.loads(path.read_text())
            return cls(raw["distro"], raw["suite"], raw["arch"], raw["profile"], raw["sources"],
                       tuple(raw["includes"]), tuple(tuple(p) for p in raw["packages"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def installed(tree: Path) -> set[tuple[str, str, str]]:
    """(name, version, arch) of every package dpkg has installed in ``tree``."""
    out = set()
    for para in (tree / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", para, re.M))
        if fields.get("Status") == "install ok installed":
            out.add((fields["Package"], fields["Version"], fields["Architecture"]))
    return out



class TreeCache:
    def __init__(self, root: Path) -> None:
        self.root = root / "trees"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / ".atomicedge-complete").exists()

    def meta(self, key: str) -> TreeMeta | None:
        return TreeMeta.load(self.root / f"{key}.json")

    def build(self, key: str, builder: Callable[[Path], None],
              meta: TreeMeta | None = None) -> Path:
        """Run ``builder(tmpdir)`` and publish the result under ``key`` atomically (a failed
        builder leaves nothing behind)."""
        final = self.path(key)
        tmp = self.root / f"{key}.tmp-{os.getpid()}"
        remove_tree(tmp)
        try:
            builder(tmp)
        except BaseException:
            remove_tree(tmp)
            raise
        (tmp / ".atomicedge-complete").touch()
        if meta is not None:  # what the tree really holds (mmdebstrap's minbase may differ)
            meta = replace(meta, packages=tuple(sorted(installed(tmp))))
            atomic_write(self.root / f"{key}.json", json.dumps(asdict(meta)), fsync=False)
        remove_tree(final)
        os.rename(tmp, final)
        return final

    def entries(self) -> list[tuple[str, TreeMeta]]:
        """Complete cached trees that have a record."""
        out = []
        for rec in sorted(self.root.glob("*.json")):
            key = rec.name[:-len(".json")]
            meta = TreeMeta.load(rec)
            if meta is not None and self.has(key):
                out.append((key, meta))
        return out

    def forget(self, key: str) -> None:
        """Drop a cached tree (e.g. one found modified) and its record."""
        (self.root / f"{key}.json").unlink(missing_ok=True)
        remove_tree(self.path(key))

    def working_copy(self, key: str, dest: Path, real: tuple[str, ...] = ("etc",)) -> None:
        """Hard-link copy of the cached tree at ``dest``, with real copies of ``real`` dirs."""
        src = self.path(key)
        tool.run(["cp", "-al", str(src), str(dest)], what="copy cached tree (hard links)")
        for name in real:
            if (src / name).is_dir() and not (src / name).is_symlink():
                shutil.rmtree(dest / name)
                tool.run(["cp", "-a", str(src / name), str(dest / name)],
                         what=f"copy cached /{name}")
        (dest / ".atomicedge-complete").unlink()

    def prune_partial(self) -> None:
        for entry in self.root.glob("*.tmp-*"):
            remove_tree(entry)
