"""``<csum>.<serial>.origin`` files: where a deployment came from and what ``upgrade`` pulls.

GKeyFile with ``[origin] refspec=REMOTE:REF`` (required), optional ``override-commit``,
``unlocked``, ``unconfigured-state``.  Other groups/keys written by rpm-ostree are preserved
because we only ever edit a :class:`KeyFile` loaded from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atomicedge.errors import FormatError
from atomicedge.fsutil import atomic_write
from atomicedge.ostree.keyfile import KeyFile


@dataclass
class Origin:
    keyfile: KeyFile

    @classmethod
    def new(cls, refspec: str) -> Origin:
        kf = KeyFile()
        kf.set("origin", "refspec", refspec)
        return cls(kf)

    @classmethod
    def parse(cls, text: str, *, source: str = "origin") -> Origin:
        kf = KeyFile.parse(text, source=source)
        origin = cls(kf)
        if not origin.refspec:
            raise FormatError(f"{source}: no [origin] refspec= line",
                              "redeploy with: atomicedge device rebase REMOTE:REF")
        return origin

    @classmethod
    def load(cls, path: Path) -> Origin:
        try:
            return cls.parse(path.read_text(encoding="utf-8"), source=str(path))
        except FileNotFoundError:
            raise FormatError(f"{path}: origin file is missing",
                              "redeploy with: atomicedge device rebase REMOTE:REF") from None
        except UnicodeDecodeError:
            raise FormatError(f"{path}: origin file is not UTF-8 text") from None

    @property
    def refspec(self) -> str:
        return self.keyfile.get("origin", "refspec") or self.keyfile.get(
            "origin", "baserefspec") or ""

    @property
    def remote(self) -> str | None:
        remote, sep, _ = self.refspec.rpartition(":")
        return remote if sep else None

    @property
    def ref(self) -> str:
        return self.refspec.rpartition(":")[2]

    @property
    def override_commit(self) -> str | None:
        return self.keyfile.get("origin", "override-commit")

    @property
    def unconfigured_state(self) -> str | None:
        return self.keyfile.get("origin", "unconfigured-state")

    def with_refspec(self, refspec: str) -> Origin:
        kf = KeyFile.parse(self.keyfile.dump())
        kf.set("origin", "refspec", refspec)
        kf.groups["origin"].pop("override-commit", None)
        return Origin(kf)

    def with_override(self, commit: str | None) -> Origin:
        kf = KeyFile.parse(self.keyfile.dump())
        if commit:
            kf.set("origin", "override-commit", commit)
        else:
            kf.groups.get("origin", {}).pop("override-commit", None)
        return Origin(kf)

    def dump(self) -> str:
        return self.keyfile.dump()

    def write(self, path: Path) -> None:
        atomic_write(path, self.dump())
