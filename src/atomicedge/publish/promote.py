"""Stage -> production promotion: mirror pull, static delta, summary — published last.

The order is what makes it safe under concurrent clients:

1. mirror-pull the refs from stage: objects land (verified) before the refs move;
2. generate the static delta from the previous production commit to the new one (written
   into a temporary directory and renamed, so a half delta is never visible);
3. regenerate the delta indexes and the summary and publish ``summary`` (and
   ``summary.sig``) by atomic rename.

A client therefore sees either the old summary (whose objects are all still there) or the
new one (whose objects, delta and index are already in place). A second run with nothing
new changes nothing (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from atomicedge.delta import generate as delta
from atomicedge.errors import NotFoundError
from atomicedge.ostree import summary
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.summary import SignOptions
from atomicedge.remote.pull import pull


def _open_or_init(path: Path) -> Repo:
    try:
        return Repo.open(path)
    except NotFoundError:
        if path.exists() and any(path.iterdir()):
            raise
        return Repo.init(path, "archive")


def _summary_current(repo: Repo, refs: dict[str, str]) -> bool:
    try:
        s = summary.load(repo)
    except (NotFoundError, OSError):
        return False
    listed = {r.name: r.commit for r in s.refs}
    return all(listed.get(ref) == csum for ref, csum in refs.items())


def promote(source: str, dest_path: Path, refs: list[str], *,
            sign_opts: SignOptions | None = None, make_delta: bool = True,
            before_publish: Callable[[], None] | None = None
            ) -> dict[str, tuple[str | None, str]]:
    """Promote ``refs`` from ``source`` (URL or remote of ``dest``) into ``dest_path``.

    Returns ``{ref: (previous production commit or None, new commit)}``.
    """
    dest = _open_or_init(Path(dest_path))
    before = {ref: dest.read_ref(ref) for ref in refs}
    res = pull(dest, source, refs, mirror=True, disable_static_deltas=True)
    out = {ref: (before[ref], res.refs[ref]) for ref in refs}
    changed = any(old != new for old, new in out.values())
    if not changed and _summary_current(dest, res.refs):
        return out
    if make_delta:
        for old, new in out.values():
            if old is not None and old != new and dest.has_object(old, ObjectType.COMMIT):
                delta.generate(dest, old, new)
    pubsum.update(dest, sign_opts=sign_opts, before_publish=before_publish)
    return out
