"""Getting commits into the sysroot repo: always the verified pull of :mod:`atomicedge.remote`.

Every remote URL - ``http(s)://`` and ``file://`` alike - goes through
:func:`atomicedge.remote.pull.pull`, so the remote's ``gpg-verify``/``sign-verify`` policy, the
ref binding and the re-hash of every object apply whatever the transport: a USB stick or an
NFS mount is no way around signature checks.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from atomicedge.errors import NotFoundError
from atomicedge.ostree.repo import Repo
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import pull as verified_pull


def pull(repo: Repo, remote: str, ref: str, *, commit: str | None = None) -> str:
    """Fetch ``remote:ref`` (or a given ``commit`` of it); returns the commit checksum."""
    rmt = remotes.get(repo, remote)
    _check_local_repo(remote, rmt.url)
    target = f"{ref}@{commit}" if commit else ref
    try:
        verified_pull(repo, remote, [target])
    except NotFoundError as exc:
        if commit and (commit in exc.message or f"{commit[2:]}.commit" in exc.message):
            raise NotFoundError(f"commit {commit} not found in remote {remote!r} ({rmt.url})",
                                "list the remote's commits with: atomicedge repo log") from None
        raise
    if commit:
        return commit
    csum = repo.read_ref(f"{remote}:{ref}")
    if csum is None:
        raise NotFoundError(f"ref {ref!r} not found in remote {remote!r} ({rmt.url})",
                            "list the remote's refs with: atomicedge repo refs --repo URL")
    return csum


def _check_local_repo(remote: str, url: str) -> None:
    """A ``file://`` URL that is no repository at all is named as such (not "no ref")."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return
    path = Path(unquote(parts.path))
    if not (path / "config").is_file():
        raise NotFoundError(f"remote {remote!r}: {path} does not exist or is not an ostree "
                            "repository", f"check the remote URL {url}")
