"""Boot Loader Specification entries as ostree 2022.7 writes them.

One file per deployment, ``loader.N/entries/ostree-<version>-<stateroot>.conf``::

    title Debian GNU/Linux 12 (bookworm) v2 (ostree:0)
    version 2
    options root=LABEL=root rw ostree=/ostree/boot.0/debian/<bootcsum>/0
    linux /ostree/debian-<bootcsum>/vmlinuz-<kver>
    initrd /ostree/debian-<bootcsum>/initramfs-<kver>.img

``version`` orders the entries (highest = default = deployment index 0); ``ostree=`` is how the
initramfs (or our nspawn bootloader) finds the deployment.  Unknown keys are kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from atomicedge.errors import FormatError

OSTREE_ARG = re.compile(r"^/ostree/boot\.([01])/([^/]+)/([0-9a-f]{64})/(\d+)$")


@dataclass
class BootEntry:
    title: str
    version: int
    options: list[str]
    linux: str
    initrd: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    filename: str = ""

    @property
    def ostree_arg(self) -> str | None:
        for opt in self.options:
            if opt.startswith("ostree="):
                return opt[len("ostree="):]
        return None

    def kargs(self) -> list[str]:
        """Kernel arguments the user chose (without the generated ``ostree=``)."""
        return [o for o in self.options if not o.startswith("ostree=")]

    def encode(self) -> str:
        lines = [f"title {self.title}", f"version {self.version}",
                 f"options {' '.join(self.options)}", f"linux {self.linux}"]
        if self.initrd:
            lines.append(f"initrd {self.initrd}")
        lines.extend(f"{k} {v}" for k, v in self.extra.items())
        return "\n".join(lines) + "\n"


def parse(text: str, *, source: str = "entry") -> BootEntry:
    keys: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        k, _, v = s.partition(" ")
        keys[k] = v.strip()
    for required in ("version", "linux"):
        if required not in keys:
            raise FormatError(f"{source}: boot entry has no '{required}' line",
                              "redeploy to rewrite the boot entries")
    try:
        version = int(keys.pop("version"))
    except ValueError:
        raise FormatError(f"{source}: boot entry 'version' is not a number") from None
    return BootEntry(title=keys.pop("title", ""), version=version,
                     options=keys.pop("options", "").split(), linux=keys.pop("linux"),
                     initrd=keys.pop("initrd", None), extra=keys, filename=Path(source).name)


def read_entries(entries_dir: Path) -> list[BootEntry]:
    """All ``*.conf`` entries, default first (version descending, as ostree sorts them)."""
    out = []
    if entries_dir.is_dir():
        for p in sorted(entries_dir.glob("*.conf")):
            out.append(parse(p.read_text(), source=str(p)))
    out.sort(key=lambda e: e.version, reverse=True)
    return out


def entry_filename(version: int, stateroot: str) -> str:
    return f"ostree-{version}-{stateroot}.conf"


def title_for(os_release: dict[str, str], version: str | None, stateroot: str,
              index: int) -> str:
    """``PRETTY_NAME [version] (ostree:<index>)``, as ostree 2022.7 builds it for one stateroot."""
    del stateroot  # 2022.7 only adds it for non-default stateroots; we keep one per sysroot
    name = os_release.get("PRETTY_NAME") or os_release.get("ID") or "ostree"
    if version and version not in name:
        name = f"{name} {version}"
    return f"{name} (ostree:{index})"


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.strip().partition("=")
        if sep and not k.startswith("#"):
            out[k] = v.strip().strip('"').strip("'")
    return out
