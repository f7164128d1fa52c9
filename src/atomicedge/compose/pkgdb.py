"""Package database queries on commits (``atomicedge repo packages``, like ``rpm-ostree db``).

The dpkg status file travels in every commit at /usr/lib/sysimage/dpkg/status (see
ostreeprep step 2), so listing and diffing packages needs only the store: walk the commit's
dirtrees to that path and read one content object — no checkout.
"""

from __future__ import annotations

from dataclasses import dataclass

from atomicedge.compose.ostreeprep import DPKG_DIR
from atomicedge.errors import NotFoundError
from atomicedge.ostree.repo import Repo

STATUS_PATH = f"{DPKG_DIR}/status"


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str
    arch: str


def parse_status(text: str) -> dict[str, Package]:
    """Installed packages of a dpkg status file: {name: Package}."""
    out: dict[str, Package] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
            out[fields["Package"]] = Package(fields["Package"], fields.get("Version", ""),
                                             fields.get("Architecture", ""))
    return out


def read_file(repo: Repo, rev: str, path: str) -> bytes:
    """Content of ``path`` in commit ``rev``, read straight from the object store."""
    commit = repo.load_commit(repo.resolve_rev(rev))
    tree = repo.load_dirtree(commit.root_tree)
    parts = path.strip("/").split("/")
    for part in parts[:-1]:
        sub = next((t for n, t, _ in tree.dirs if n == part), None)
        if sub is None:
            raise NotFoundError(f"{rev}: no /{path} in the commit",
                                "was it built by `atomicedge compose`?")
        tree = repo.load_dirtree(sub)
    csum = next((c for n, c in tree.files if n == parts[-1]), None)
    if csum is None:
        raise NotFoundError(f"{rev}: no /{path} in the commit",
                            "was it built by `atomicedge compose`?")
    _header, data = repo.load_content(csum)
    return data


def packages(repo: Repo, rev: str) -> dict[str, Package]:
    return parse_status(read_file(repo, rev, STATUS_PATH).decode("utf-8", "replace"))


@dataclass(frozen=True)
class PackageDiff:
    added: list[Package]
    removed: list[Package]
    upgraded: list[tuple[Package, Package]]   # (old, new); a downgrade is listed here too


def diff(old: dict[str, Package], new: dict[str, Package]) -> PackageDiff:
    """Pure: added / removed / changed-version between two package sets."""
    return PackageDiff(
        added=sorted(new[n] for n in new.keys() - old.keys()),
        removed=sorted(old[n] for n in old.keys() - new.keys()),
        upgraded=sorted((old[n], new[n]) for n in old.keys() & new.keys()
                        if old[n].version != new[n].version))


def diff_lines(d: PackageDiff) -> list[str]:
    """The diff as rich-markup lines (``+`` added, ``-`` removed, ``~`` upgraded)."""
    return ([f"[green]+ {p.name} {p.version}[/green]" for p in d.added]
            + [f"[red]- {p.name} {p.version}[/red]" for p in d.removed]
            + [f"[yellow]~ {a.name} {a.version} -> {b.version}[/yellow]" for a, b in d.upgraded])
