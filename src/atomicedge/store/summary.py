"""The repository ``summary`` (+ ``summary.sig`` and ``delta-indexes/``): build, publish, view.

Format (``(a(s(taya{sv}))a{sv})``, libostree's): refs sorted by name (clients binary-search),
per-ref commit size in host order, ``ostree.commit.timestamp`` big-endian,
``ostree.commit.version``; repo keys ``ostree.summary.*`` and ``ostree.static-deltas`` (delta
name -> sha256 of its superblock). Publication writes everything to temporaries and renames
``summary`` then ``summary.sig`` into place, so a client never reads a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atomicedge.errors import FormatError, NotFoundError
from atomicedge.fsutil import atomic_write
from atomicedge.store import delta_format as df
from atomicedge.store import gpg, sign
from atomicedge.store import gvariant as gv
from atomicedge.store import objects as ob
from atomicedge.store.gvariant import Variant
from atomicedge.store.objects import ObjectType
from atomicedge.store.repo import Repo

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
# building


def deltas_digests(repo: Repo) -> dict[str, str]:
    out = {}
    for name in df.list_deltas(repo.path):
        frm, to = df.parse_delta_name(name)
        sb = repo.path / df.delta_relpath(frm, to) / "superblock"
        out[name] = hashlib.sha256(sb.read_bytes()).hexdigest()
    return out


def _deltas_variant(digests: dict[str, str]) -> Variant:
    return Variant("a{sv}", {n: Variant("ay", bytes.fromhex(d)) for n, d in digests.items()})


def build(repo: Repo, *, now: int | None = None,
          extra: dict[str, Variant] | None = None) -> Summary:
    """The summary of ``repo``'s local refs (pure function of the repo and ``now``)."""
    refs = repo.list_refs(remotes=False)
    entries = []
    for name in sorted(refs, key=lambda n: n.encode()):
        csum = refs[name]
        data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
        c = ob.Commit.decode(data)
        meta: dict[str, Variant] = {}
        if c.version is not None:
            meta["ostree.commit.version"] = Variant("s", c.version)
        meta["ostree.commit.timestamp"] = Variant("t", ob.bswap64(c.timestamp))
        entries.append(RefEntry(name, csum, len(data), meta))
    md: dict[str, Variant] = dict(extra or {})
    digests = deltas_digests(repo)
    if digests and not repo.config.get_bool("core", "no-deltas-in-summary", False):
        md["ostree.static-deltas"] = _deltas_variant(digests)
    md["ostree.summary.last-modified"] = Variant(
        "t", ob.bswap64(int(time.time()) if now is None else now))
    md["ostree.summary.mode"] = Variant(
        "s", "archive-z2" if repo.mode == "archive" else repo.mode)
    md["ostree.summary.tombstone-commits"] = Variant(
        "b", repo.config.get_bool("core", "tombstone-commits", False))
    md["ostree.summary.indexed-deltas"] = Variant("b", True)
    coll = repo.config.get("core", "collection-id")
    if coll:
        md["ostree.summary.collection-id"] = Variant("s", coll)
    return Summary(entries, md)


def write_delta_indexes(repo: Repo, digests: dict[str, str]) -> None:
    """Rewrite ``delta-indexes/``: one index per TO commit listing every delta to it."""
    by_to: dict[str, dict[str, str]] = {}
    for name, digest in digests.items():
        _frm, to = df.parse_delta_name(name)
        by_to.setdefault(to, {})[name] = digest
    wanted = set()
    for to, names in by_to.items():
        rel = df.index_relpath(to)
        wanted.add(rel)
        path = repo.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = ob.encode_metadata_dict(
            {"ostree.static-deltas": _deltas_variant(dict(sorted(names.items())))})
        atomic_write(path, data, fsync=repo.fsync_enabled)
    root = repo.path / "delta-indexes"
    if root.is_dir():
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                if f.endswith(".index") and str(p.relative_to(repo.path)) not in wanted:
                    p.unlink()


@dataclass
class SignOptions:
    gpg_key_ids: list[str] = field(default_factory=list)
    gpg_homedir: Path | None = None
    ed25519_secrets: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.gpg_key_ids or self.ed25519_secrets)


def sign_bytes(data: bytes, opts: SignOptions) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key_id in opts.gpg_key_ids:
        meta = sign.add_signature(meta, sign.GPG_KEY,
                                  gpg.sign_detached(data, key_id, opts.gpg_homedir))
    for secret in opts.ed25519_secrets:
        meta = sign.add_signature(meta, sign.ED25519_KEY, sign.ed25519_sign(data, secret))
    return meta


def update(repo: Repo, *, sign_opts: SignOptions | None = None, now: int | None = None,
           extra: dict[str, Variant] | None = None,
           before_publish: Callable[[], None] | None = None) -> Summary:
    """``summary -u``: delta indexes, then ``summary`` and ``summary.sig`` by atomic rename."""
    with repo.lock(exclusive=False):
        s = build(repo, now=now, extra=extra)
        write_delta_indexes(repo, deltas_digests(repo))
        data = encode(s)
        sig = sign_bytes(data, sign_opts) if sign_opts and sign_opts.any else None
        if repo.config.get("core", "indexed-deltas") != "true":
            repo.config.set("core", "indexed-deltas", "true")
            repo.write_config()
        if before_publish is not None:
            before_publish()
        atomic_write(repo.path / "summary", data, fsync=repo.fsync_enabled)
        if sig is not None:
            atomic_write(repo.path / "summary.sig", ob.encode_metadata_dict(sig),
                         fsync=repo.fsync_enabled)
            st = os.stat(repo.path / "summary.sig")
            os.utime(repo.path / "summary", ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            (repo.path / "summary.sig").unlink(missing_ok=True)
    return s


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
