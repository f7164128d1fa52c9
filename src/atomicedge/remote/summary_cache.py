"""The client's copy of each remote's ``summary`` and ``summary.sig``, in ostree's layout.

A device that checks for updates every hour would otherwise download the whole summary
(every ref, every delta of the repository) each time. With a copy and its validators the
check is a conditional GET answered by ``304``. The layout is libostree's own
(``tmp/cache/summaries/REMOTE`` and ``REMOTE.sig``, the ETag in the ``user.etag`` xattr,
Last-Modified as the file's mtime), so ``ostree pull`` and ``atomicedge repo pull`` on the
same repository reuse each other's copy.

The cache is only a cache: whatever it holds is parsed and (when the remote requires it)
signature-checked exactly like a fresh download before it is used.
"""

from __future__ import annotations

import email.utils
import os
from dataclasses import dataclass
from pathlib import Path

from atomicedge.fsutil import atomic_write
from atomicedge.remote.config import validate_remote_name
from atomicedge.remote.http import Validators

CACHE_DIR = "tmp/cache/summaries"
ETAG_XATTR = "user.etag"


@dataclass(frozen=True)
class Cached:
    data: bytes
    validators: Validators


class SummaryCache:
    def __init__(self, repo_path: Path, remote: str) -> None:
        self.dir = repo_path / CACHE_DIR
        self.name = validate_remote_name(remote)

    def _path(self, sig: bool) -> Path:
        return self.dir / (f"{self.name}.sig" if sig else self.name)

    def load(self, *, sig: bool) -> Cached | None:
        path = self._path(sig)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
                try:
                    etag: str | None = os.getxattr(f.fileno(), ETAG_XATTR).decode("ascii")
                except (OSError, UnicodeDecodeError):
                    etag = None
        except OSError:
            return None
        modified = email.utils.formatdate(st.st_mtime, usegmt=True) if st.st_mtime else None
        return Cached(data, Validators(etag, modified))

    def store(self, *, sig: bool, data: bytes, validators: Validators) -> None:
        """Replace one cached file atomically, its validators included."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(sig)
        mtime = _http_date(validators.last_modified)
        etag = validators.etag.encode("ascii", "replace") if validators.etag else None

        def finish(fd: int) -> None:
            if etag:
                try:
                    os.setxattr(fd, ETAG_XATTR, etag)
                except OSError:  # no user xattrs here: the copy still serves by date
                    pass
            if mtime is not None:
                os.utime(fd, (mtime, mtime))

        atomic_write(path, data, fsync=False, before_rename=finish)

    def drop(self, *, sig: bool) -> None:
        self._path(sig).unlink(missing_ok=True)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
