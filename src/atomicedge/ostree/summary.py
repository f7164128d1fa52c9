"""The repository ``summary`` (+ ``summary.sig`` and ``delta-indexes/``): build, publish, view.

Format (``(a(s(taya{sv}))a{sv})``, libostree's): refs sorted by name (clients binary-search),
per-ref commit size in host order, ``ostree.commit.timestamp`` big-endian,
``ostree.commit.version``; repo keys ``ostree.summary.*`` and ``ostree.static-deltas`` (delta
name -> sha256 of its superblock). Publication writes everything to temporaries and renames
``summary`` then ``summary.sig`` into place, so a client never reads a half-written file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from atomicedge.errors import FormatError, NotFoundError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree import objects as ob
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.repo import Repo

SUMMARY_SIG = "(a(s(taya{sv}))a{sv})"
MAX_SUMMARY = 64 * 1024 * 1024


@dataclass
class RefEntry:
    name: str
    commit: str
    size: int
    metadata: dict[str, Variant] = field(default_factory=dict)

    @property
    def timestamp(self) -> int | None:
        v = self.metadata.get("ostree.commit.timestamp")
        return ob.bswap64(v.value) if v is not None and v.type == "t" else None

    @property
    def version(self) -> str | None:
        v = self.metadata.get("ostree.commit.version")
        return v.value if v is not None and v.type == "s" else None


@dataclass
class Summary:
    refs: list[RefEntry]
    metadata: dict[str, Variant]

    def lookup(self, ref: str) -> RefEntry | None:
        for r in self.refs:
            if r.name == ref:
                return r
        return None

    @property
    def deltas(self) -> dict[str, str]:
        """Delta name -> superblock sha256 (hex) advertised in the summary."""
        v = self.metadata.get("ostree.static-deltas")
        if v is None:
            return {}
        if v.type != "a{sv}":
            raise FormatError("summary ostree.static-deltas is not a{sv}")
        out = {}
        for name, digest in v.value.items():
            if digest.type == "ay" and len(digest.value) == 32:
                out[name] = bytes(digest.value).hex()
        return out

    @property
    def indexed_deltas(self) -> bool:
        v = self.metadata.get("ostree.summary.indexed-deltas")
        return bool(v is not None and v.type == "b" and v.value)


def parse(data: bytes) -> Summary:
    if len(data) > MAX_SUMMARY:
        raise FormatError(f"summary of {len(data)} bytes is over the {MAX_SUMMARY}-byte cap")
    refs, meta = gv.decode(SUMMARY_SIG, data)
    out: list[RefEntry] = []
    prev = b""
    for name, (size, csum, rmeta) in refs:
        key = name.encode()
        if out and key <= prev:
            raise FormatError("summary refs are not sorted", "the summary is corrupt")
        prev = key
        out.append(RefEntry(name, ob.hexsum(bytes(csum)), size, dict(rmeta)))
    return Summary(out, dict(meta))


def encode(s: Summary) -> bytes:
    return gv.encode(SUMMARY_SIG, (
        [(r.name, (r.size, ob.raw(r.commit), r.metadata)) for r in s.refs], s.metadata))


# ---------------------------------------------------------------------------------------
# viewing


def _fmt_ts(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00")


def _fmt_value(v: Variant) -> str:
    if v.type == "t":
        return str(ob.bswap64(v.value))
    if v.type == "s":
        return repr(v.value)
    if v.type == "b":
        return "true" if v.value else "false"
    return repr(v.value)


def view(s: Summary) -> str:
    """Human-readable summary, laid out like ``ostree summary --view``."""
    lines = []
    for r in s.refs:
        lines.append(f"* {r.name}")
        lines.append(f"    Latest Commit ({r.size} bytes):")
        lines.append(f"      {r.commit}")
        if r.version is not None:
            lines.append(f"    Version (ostree.commit.version): {r.version}")
        if r.timestamp is not None:
            lines.append(f"    Timestamp (ostree.commit.timestamp): {_fmt_ts(r.timestamp)}")
        lines.append("")
    deltas = s.deltas
    if deltas:
        lines.append("Static Deltas (ostree.static-deltas):")
        for name, digest in sorted(deltas.items()):
            lines.append(f"  {name}")
            lines.append(f"    {digest}")
        lines.append("")
    labels = {
        "ostree.summary.last-modified": "Last-Modified",
        "ostree.summary.mode": "Repository Mode",
        "ostree.summary.tombstone-commits": "Has Tombstone Commits",
        "ostree.summary.collection-id": "Collection ID",
        "ostree.summary.expires": "Expires",
    }
    for key, v in s.metadata.items():
        if key == "ostree.static-deltas":
            continue
        label = labels.get(key)
        if key in ("ostree.summary.last-modified", "ostree.summary.expires") and v.type == "t":
            text = _fmt_ts(ob.bswap64(v.value))
        elif key == "ostree.summary.tombstone-commits" and v.type == "b":
            text = "Yes" if v.value else "No"
        elif v.type == "s" and label:
            text = v.value
        else:
            text = _fmt_value(v)
        lines.append(f"{label} ({key}): {text}" if label else f"{key}: {text}")
    return "\n".join(lines) + "\n"


def load(repo: Repo) -> Summary:
    path = repo.path / "summary"
    if not path.exists():
        raise NotFoundError(f"{repo.path} has no summary",
                          f"generate it with: atomicedge repo summary -u --repo {repo.path}")
    return parse(path.read_bytes())
