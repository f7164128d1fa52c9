"""``compose.json``: what every artifact says about the commit it carries (ref, commit, version,
timestamp, parent), as osbuild-composer's edge artifacts do."""

from __future__ import annotations

from atomicedge.ostree.repo import Repo


def compose_json(repo: Repo, ref: str, commit: str) -> dict[str, object]:
    c = repo.load_commit(commit)
    return {"ref": ref, "ostree-commit": commit, "ostree-version": c.version or "",
            "ostree-timestamp": c.timestamp, "ostree-parent": c.parent or ""}
