"""apt-get / apt-cache seam: a private apt state per set of sources, for depsolve and search.

Why a private state: depsolve must answer "what would be installed into an *empty* tree from
*these* sources", not what the build host has; so every call points apt at its own lists, cache
and an empty dpkg status file, while keeping the host's apt.conf (proxies, validity settings).
The state lives in the compose cache keyed by the sources text, so ``apt-get update`` is an
If-Modified-Since round trip after the first time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.errors import UsageError

HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) (.*?) \[([^\]]+)\]\)")


@dataclass(frozen=True)
class Sources:
    """The apt sources a compose uses: file name + deb822/one-line text, and whether offline."""

    name: str        # .sources or .list file name
    text: str
    offline_dir: Path | None = None   # set for a local file:// repository

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.name}\n{self.text}".encode()).hexdigest()[:16]

    @classmethod
    def host(cls) -> Sources:
        """The machine's configured Debian sources (what the issue calls the default)."""
        files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
        if not files:
            raise UsageError("no /etc/apt/sources.list.d/*.sources on this machine",
                             "pass --mirror URL or --offline-repo DIR")
        text = "\n\n".join(f.read_text().strip() for f in files) + "\n"
        return cls("host.sources", text)

    @classmethod
    def mirror(cls, url: str, suite: str) -> Sources:
        if not re.match(r"^(https?|file)://\S+$", url):
            raise UsageError(f"--mirror {url!r} is not an http(s):// or file:// URL",
                             "e.g. --mirror http://deb.debian.org/debian")
        signed = f"[signed-by={DEBIAN_KEYRING}] " if not url.startswith("file:") else ""
        return cls("mirror.list", f"deb {signed}{url} {suite} main\n")

    @classmethod
    def offline(cls, repo: Path) -> Sources:
        """A flat local repository (``Packages`` + ``Release`` at its top, see machine notes)."""
        repo = repo.resolve()
        if not (repo / "Packages").exists() and not (repo / "Packages.gz").exists():
            raise UsageError(f"{repo} has no Packages index",
                             "build it with apt-ftparchive packages . > Packages")
        return cls("offline.list", f"deb [trusted=yes] file://{repo} ./\n", offline_dir=repo)


class AptState:
    """A private apt root for one Sources value (lists, caches, an empty dpkg status)."""

    def __init__(self, sources: Sources, cache_root: Path, arch: str) -> None:
        self.sources = sources
        self.arch = arch
        self.dir = cache_root / "apt" / sources.key
        for sub in ("etc/sources.list.d", "etc/preferences.d", "lists/partial",
                    "cache/archives/partial"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        src = self.dir / "etc/sources.list.d" / sources.name
        if not src.exists() or src.read_text() != sources.text:
            src.write_text(sources.text)
        (self.dir / "status").touch()

    def options(self) -> list[str]:
        d = self.dir
        opts = {
            "Dir::Etc::sourcelist": "/dev/null",
            "Dir::Etc::sourceparts": str(d / "etc/sources.list.d"),
            "Dir::Etc::preferences": "/dev/null",
            "Dir::Etc::preferencesparts": str(d / "etc/preferences.d"),
            "Dir::State::lists": str(d / "lists"),
            "Dir::State::status": str(d / "status"),
            "Dir::State::extended_states": str(d / "extended_states"),
            "Dir::Cache": str(d / "cache"),
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Install-Recommends": "false",
            "Debug::NoLocking": "true",
        }
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def update(self) -> None:
        tool.run(["apt-get", "-q", "update", *self.options()], what="apt-get update",
                 hint="check the sources / network (or use --offline-repo)", timeout=1800)

    def release_hashes(self) -> dict[str, str]:
        """sha256 of every Release/InRelease file fetched: the sources' identity for the cache."""
        out = {}
        for f in sorted((self.dir / "lists").iterdir()):
            if f.name.endswith(("_InRelease", "_Release")):
                out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
        return out

    def madison(self, names: list[str]) -> dict[str, list[str]]:
        """Available versions per exact package name (highest first); missing names absent."""
        if not names:
            return {}
        proc = tool.run(["apt-cache", *self.options(), "madison", *names],
                        what="apt-cache madison", check=False)
        found: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[1] not in found.get(parts[0], []):
                found.setdefault(parts[0], []).append(parts[1])
        return found

    def pkgnames(self, prefix: str = "") -> list[str]:
        proc = tool.run(["apt-cache", *self.options(), "pkgnames", prefix],
                        what="apt-cache pkgnames", check=False)
        return sorted(set(proc.stdout.split()))

    def search_names(self, regex: str) -> list[tuple[str, str]]:
        """``apt-cache search --names-only``: [(name, summary)]."""
        proc = tool.run(["apt-cache", *self.options(), "search", "--names-only", regex],
                        what="apt-cache search", check=False)
        out = []
        for line in proc.stdout.splitlines():
            name, _, summary = line.partition(" - ")
            out.append((name.strip(), summary.strip()))
        return out

    def simulate(self, specs: list[str]) -> list[tuple[str, str, str]]:
        """``apt-get -s install`` into the empty status: [(name, version, arch)] sorted."""
        proc = tool.run(["apt-get", "-s", "-q", "install", *self.options(), *specs],
                        what="depsolve (apt-get -s install)",
                        hint="a package conflict or a missing dependency in the sources")
        out = []
        for line in proc.stdout.splitlines():
            m = _INST.match(line)
            if m:
                out.append((m.group(1), m.group(2), m.group(4)))
        return sorted(set(out))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def host_arch() -> str:
    return tool.run(["dpkg", "--print-architecture"], what="dpkg --print-architecture").stdout \
        .strip() or os.uname().machine
