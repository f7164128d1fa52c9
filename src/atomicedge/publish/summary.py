"""Publishing a repository's ``summary``: delta indexes, the summary and ``summary.sig``.

``summary -u``: every file is written to a temporary and renamed into place (``summary`` then
``summary.sig``), so a client never reads a half-written file. The codec is
:mod:`atomicedge.ostree.summary`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomicedge.delta import format as df
from atomicedge.fsutil import atomic_write
from atomicedge.ostree import objects as ob
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.summary import RefEntry, Summary, encode
from atomicedge.trust import gpg, sign


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


