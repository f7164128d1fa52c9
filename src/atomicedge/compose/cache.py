"""Content-addressed cache of installed package trees (the output of mmdebstrap).

Key = sha256 of (cache format, distro/suite/arch, profile, the sources' Release file hashes, the
mmdebstrap include list, the resolved package set). If any input changes — a security update
lands in the mirror, a package is added — the key changes and mmdebstrap runs again; otherwise
a recompose copies the cached tree and skips mmdebstrap entirely.

Trees are built in ``<key>.tmp-<pid>`` and renamed into place, so a killed build never leaves
a half tree under a valid key. A working copy is made with hard links for everything except
/etc (which every customization edits); the customization steps never write through an
existing inode outside /etc, so the cached tree stays pristine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.depsolve import Resolution
from atomicedge.compose.mmdebstrap import remove_tree

FORMAT = 1


def default_root() -> Path:
    return Path(os.environ.get("ATOMICEDGE_CACHE", "/var/tmp/atomicedge-cache")) / "compose"


def tree_key(distro: str, suite: str, arch: str, res: Resolution) -> str:
    blob = json.dumps({"format": FORMAT, "distro": distro, "suite": suite, "arch": arch,
                       "profile": res.profile, "release": res.release_hashes,
                       "includes": res.includes, "packages": res.packages}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class TreeCache:
    def __init__(self, root: Path) -> None:
        self.root = root / "trees"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / ".atomicedge-complete").exists()

    def build(self, key: str, builder: Callable[[Path], None]) -> Path:
        """Run ``builder(tmpdir)`` and publish the result under ``key`` atomically."""
        final = self.path(key)
        tmp = self.root / f"{key}.tmp-{os.getpid()}"
        remove_tree(tmp)
        builder(tmp)
        (tmp / ".atomicedge-complete").touch()
        remove_tree(final)
        os.rename(tmp, final)
        return final

    def working_copy(self, key: str, dest: Path) -> None:
        """Hard-link copy of the cached tree at ``dest``, with a real copy of /etc."""
        src = self.path(key)
        tool.run(["cp", "-al", str(src), str(dest)], what="copy cached tree (hard links)")
        shutil.rmtree(dest / "etc")
        tool.run(["cp", "-a", str(src / "etc"), str(dest / "etc")], what="copy cached /etc")
        (dest / ".atomicedge-complete").unlink()

    def prune_partial(self) -> None:
        for entry in self.root.glob("*.tmp-*"):
            remove_tree(entry)
