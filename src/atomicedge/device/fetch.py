"""Getting commits into the sysroot repo: the store's pull, or a local repo copy.

``http(s)://`` remotes go through :mod:`atomicedge.remote.pull` (the network client).
``file://`` URLs and plain paths are copied object by object from the source repository
(what ``ostree pull-local`` does), re-hashing content on the way in, inside one transaction
whose ref update comes last - so an interrupted pull leaves only garbage objects.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from atomicedge.errors import NotFoundError
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.ostree.walk import reachable
from atomicedge.remote import config as remotes


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if not parts.scheme:
        return Path(url)
    return None


def pull(repo: Repo, remote: str, ref: str, *, commit: str | None = None) -> str:
    """Fetch ``remote:ref`` (or a given ``commit`` of it); returns the commit checksum."""
    rmt = remotes.get(repo, remote)
    src = _local_path(rmt.url)
    if src is None:
        return _network_pull(repo, remote, ref, commit)
    try:
        source = Repo.open(src)
    except NotFoundError as exc:
        raise NotFoundError(f"remote {remote!r}: {exc.message}",
                            f"check the remote URL {rmt.url}") from None
    csum = commit or source.read_ref(ref)
    if csum is None:
        raise NotFoundError(f"ref {ref!r} not found in remote {remote!r} ({rmt.url})",
                            "list the remote's refs with: atomicedge repo refs --repo URL")
    if not source.has_object(csum, ObjectType.COMMIT):
        raise NotFoundError(f"commit {csum} not found in remote {remote!r}")
    copy_commit(source, repo, csum)
    if commit is None:
        repo.set_ref(f"{remote}:{ref}", csum)
    return csum


def _network_pull(repo: Repo, remote: str, ref: str, commit: str | None) -> str:
    try:
        mod = importlib.import_module("atomicedge.remote.pull")
    except ModuleNotFoundError:
        raise NotFoundError("network pulls are not available in this build",
                            "use a file:// remote") from None
    target = f"{ref}@{commit}" if commit else ref
    mod.pull(repo, remote, [target])
    if commit:
        return commit
    csum = repo.read_ref(f"{remote}:{ref}")
    if csum is None:
        raise NotFoundError(f"ref {ref!r} not found in remote {remote!r}")
    return csum


def copy_commit(source: Repo, dest: Repo, csum: str) -> int:
    """Copy every object of ``csum`` that ``dest`` lacks; returns how many were copied."""
    wanted = [o for o in reachable(source, csum, depth=0) if not dest.has_object(*o)]
    wanted.sort(key=lambda o: o[1] == ObjectType.COMMIT)  # commit object last
    with dest.transaction() as tx:
        for obj, objtype in wanted:
            if objtype == ObjectType.FILE:
                header, content = source.load_content(obj)
                tx.write_content(header, content, expected=obj)
            else:
                tx.write_metadata(objtype, source.read_metadata_bytes(obj, objtype,
                                                                      verify=True))
    meta = source.read_detached_metadata(csum)
    if meta is not None and dest.read_detached_metadata(csum) is None:
        dest.write_detached_metadata(csum, meta)
    return len(wanted)
