"""The edge-commit artifact: a tar with ``repo/`` (archive mode, one ref) and ``compose.json``;
``write_image`` also dispatches to the edge-container OCI archive (``container.py``).

Same shape as Image Builder's ``commit.tar`` so existing habits work (untar, serve ``repo/``
over HTTP, pull). The repo inside holds only the new commit's objects (its parent is referenced
by checksum, not shipped), copied with the store's own pull over ``file://``. The tar is written
to a temporary name and renamed, so a failed build leaves no half artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from atomicedge.compose.apt import AptState
from atomicedge.compose.metadata import compose_json
from atomicedge.ostree.repo import Repo


def write_commit_tar(repo: Repo, ref: str, commit: str, output: Path) -> None:
    from atomicedge.remote.pull import pull
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".commit-tar-", dir=output.parent))
    try:
        sub = Repo.init(work / "repo", mode="archive")
        pull(sub, f"file://{repo.path.resolve()}", [f"{ref}@{commit}"])
        sub.set_ref(ref, commit)
        (work / "compose.json").write_text(json.dumps(compose_json(repo, ref, commit), indent=2))
        tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        with tarfile.open(tmp, "w") as tar:
            tar.add(work / "compose.json", arcname="compose.json")
            tar.add(work / "repo", arcname="repo")
        os.replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_image(image_type: str, repo: Repo, ref: str, commit: str, output: Path, *,
                state: AptState, cache_root: Path, name: str) -> None:
    """The artifact of ``image_type`` for ``commit``: edge-commit tar or edge-container OCI
    archive (``name`` = the image's ``NAME:TAG`` annotation)."""
    if image_type == "edge-container":
        from atomicedge.compose.container import write_container
        write_container(repo, ref, commit, output, state, cache_root / "container", name)
    else:
        write_commit_tar(repo, ref, commit, output)
