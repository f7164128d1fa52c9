"""The composer's view of its apt sources: package index, search, depsolve (the weldr
``projects``/``modules`` routes, blueprint depsolve/freeze, compose start).

The index (name, version, arch, summary, description, homepage) is parsed once from
``apt-cache dumpavail`` per set of Release files; ``apt-get update`` runs at most every
``ttl`` seconds. Debian versions are mapped onto osbuild-composer's epoch/version/release
fields: ``1:2.3-4`` -> epoch 1, version ``2.3``, release ``4`` (native packages: release "").
"""

from __future__ import annotations

import fnmatch
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge import runner as tool
from atomicedge.compose import depsolve as ds
from atomicedge.compose.apt import AptState, Sources
from atomicedge.compose.blueprint import Blueprint


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    summary: str
    description: str
    homepage: str


def split_version(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return (int(epoch) if epoch.isdigit() else 0), upstream, release


def dep_json(name: str, version: str, arch: str) -> dict[str, Any]:
    """osbuild-composer's DepsolvedPackageInfo shape for one Debian package."""
    epoch, upstream, release = split_version(version)
    return {"name": name, "epoch": epoch, "version": upstream, "release": release,
            "arch": arch}


def nevra(dep: dict[str, Any]) -> str:
    evr = f"{dep['version']}-{dep['release']}" if dep.get("release") else dep["version"]
    if dep.get("epoch"):
        evr = f"{dep['epoch']}:{evr}"
    return f"{dep['name']}-{evr}.{dep['arch']}"


def info_json(pkg: Package) -> dict[str, Any]:
    """osbuild-composer's PackageInfo shape."""
    epoch, upstream, release = split_version(pkg.version)
    build = {"arch": pkg.arch, "build_time": "", "epoch": epoch, "release": release,
             "source": {"license": "", "version": upstream, "source_ref": "", "metadata": {}},
             "changelog": "", "build_config_ref": "", "build_env_ref": "", "metadata": {}}
    return {"name": pkg.name, "summary": pkg.summary, "description": pkg.description,
            "homepage": pkg.homepage, "upstream_vcs": "", "builds": [build]}


def parse_dumpavail(text: str) -> dict[str, Package]:
    """Highest version per name from ``apt-cache dumpavail`` (stanzas in index order)."""
    out: dict[str, Package] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name or name in out:
            continue
        desc = fields.get("Description", "")
        summary, _, body = desc.partition("\n")
        body = "\n".join("" if ln.strip() == "." else ln.strip() for ln in body.splitlines())
        out[name] = Package(name, fields.get("Version", ""), fields.get("Architecture", ""),
                            summary, body.strip() or summary, fields.get("Homepage", ""))
    return out


class PackageSource:
    """apt state of the server's sources, refreshed lazily; thread-safe."""

    def __init__(self, sources: Sources, cache_root: Path, arch: str, profile: str,
                 ttl: float = 300.0) -> None:
        self.sources = sources
        self.arch = arch
        self.profile = profile
        self.cache_root = cache_root
        self.state = AptState(sources, cache_root, arch)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._updated = 0.0
        self._index: tuple[tuple[tuple[str, str], ...], dict[str, Package]] | None = None

    def fresh(self) -> AptState:
        with self._lock:
            if time.monotonic() - self._updated > self.ttl:
                self.state.update()
                self._updated = time.monotonic()
        return self.state

    def index(self) -> dict[str, Package]:
        state = self.fresh()
        hashes = tuple(sorted(state.release_hashes().items()))
        with self._lock:
            if self._index is None or self._index[0] != hashes:
                proc = tool.run(["apt-cache", *state.options(), "dumpavail"],
                                what="apt-cache dumpavail")
                self._index = (hashes, parse_dumpavail(proc.stdout))
            return self._index[1]

    def search(self, patterns: list[str]) -> list[Package]:
        """Packages whose name matches any glob (exact names match themselves), sorted."""
        idx = self.index()
        if not patterns:
            return [idx[n] for n in sorted(idx)]
        names: set[str] = set()
        for pat in patterns:
            if any(ch in pat for ch in "*?["):
                names.update(n for n in idx if fnmatch.fnmatchcase(n, pat))
            elif pat in idx:
                names.add(pat)
        return [idx[n] for n in sorted(names)]

    def depsolve_names(self, names: list[str]) -> list[dict[str, Any]]:
        """Everything installing ``names`` into an empty tree brings (ToolError if unknown)."""
        state = self.fresh()
        return [dep_json(*p) for p in state.simulate(names)]

    def depsolve_blueprint(self, bp: Blueprint) -> list[dict[str, Any]]:
        """The image's full package set: the blueprint with the server's profile."""
        res = ds.depsolve(bp, self.fresh(), self.profile, update=False)
        return [dep_json(*p) for p in res.packages]

    def source_json(self) -> dict[str, Any]:
        url = ""
        for word in self.sources.text.split():
            if "://" in word:
                url = word
                break
        return {"id": self.source_id(), "name": self.sources.name, "type": "deb",
                "url": url, "check_gpg": "trusted=yes" not in self.sources.text,
                "check_ssl": url.startswith("https"), "system": True, "rhsm": False}

    def source_id(self) -> str:
        return self.sources.name.rsplit(".", 1)[0]
