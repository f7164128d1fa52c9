"""One compose, run in its own process by a worker: ``python -m atomicedge.composer.buildjob``.

Input: the job as JSON on stdin. Output: JSON lines on stdout — ``step`` (a compose step
started or finished), ``log`` (a line for the compose log) and finally ``result`` or ``error``.

Why a process of its own: cancelling must stop mmdebstrap and everything under it, and the
worker must survive whatever the build does. SIGTERM (sent by the worker on cancel, and by the
kernel when the worker dies: ``PR_SET_PDEATHSIG``) raises :class:`Canceled` in the build, so
the library's own clean-up runs (half trees unmounted and removed, no half artifact); then the
rest of the process group is killed.

ostree options follow osbuild-composer: without ``url`` the commit has no parent; with ``url``
the parent is ``parent`` (a ref at the URL, or a commit checksum) or else the new ref itself,
read from ``<url>/refs/heads/<ref>`` and its commit object pulled before the build.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from atomicedge.compose import build
from atomicedge.compose.apt import AptState, Sources
from atomicedge.compose.blueprint import Blueprint
from atomicedge.composer.blueprints import to_model
from atomicedge.errors import AtomicEdgeError, UsageError
from atomicedge.ostree.repo import Repo

# relative weight of each step for the progress bar (the package tree dominates a cold build:
# mmdebstrap, or apt into a cached tree, or nothing when the tree is cached)
WEIGHTS = {"pull parent commit": 2, "resolve parent": 2, "depsolve": 8, "tree": 50,
           "copy tree": 5, "customizations": 8, "ostree preparation": 5, "commit": 15,
           "artifact": 7}
TREE_STEPS = ("mmdebstrap", "apt into cached tree")
PARENT_STEPS = ("pull parent commit", "resolve parent")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Canceled(BaseException):
    """SIGTERM: the compose was cancelled or the worker went away."""


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _weight(name: str) -> int:
    """The step's weight: names carry details (``mmdebstrap (98 packages)``)."""
    head = name.split(" (")[0]
    if head.startswith(TREE_STEPS):
        return WEIGHTS["tree"]
    if head.endswith(" artifact"):
        return WEIGHTS["artifact"]
    return WEIGHTS.get(head, 0) if head != "tree" else 0


def total_weight(with_parent: bool) -> int:
    """The steps a compose runs: the parent steps only when it has an ostree URL."""
    skip = 0 if with_parent else sum(WEIGHTS[k] for k in PARENT_STEPS)
    return sum(WEIGHTS.values()) - skip


class EventSteps(build.Steps):
    """Steps reported as events: the worker turns them into log lines and progress."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.done = 0
        self.total = total

    def started(self, name: str) -> None:
        emit("step", name=name, state="start", done=min(self.done, self.total),
             total=self.total)
        emit("log", text=f"--> {name}")

    def finished(self, name: str, seconds: float) -> None:
        self.done += _weight(name)
        emit("step", name=name, state="done", done=min(self.done, self.total),
             total=self.total)
        emit("log", text=f"<-- {name}: done in {seconds:.2f} s")

    def note(self, text: str) -> None:
        if text.startswith("package tree cached"):
            self.done += WEIGHTS["tree"]
        emit("log", text=text)


class _LogToEvents(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not text.startswith("compose: "):   # the steps already report those
            emit("log", text=text)


def _parent(repo_path: Path, ostree: dict[str, Any], ref: str) -> str:
    """The parent commit checksum per osbuild-composer's url/parent rules, or ``none``."""
    url = ostree.get("url") or ""
    if not url:
        return "none"
    repo = Repo.open(repo_path) if (repo_path / "config").exists() else \
        Repo.init(repo_path, mode="archive")
    parent = ostree.get("parent") or ref
    if HEX64.match(parent):
        from atomicedge.remote.pull import pull
        pull(repo, url, [f"{ref}@{parent}"], commit_metadata_only=True)
        return parent
    return build.resolve_url_parent(repo, url, parent)


def write_image(job: dict[str, Any], bp: Blueprint, sources: Sources, repo: Repo, ref: str,
                commit: str) -> None:
    """The image type's artifact (edge-commit tar; edge-container when the builder has it)."""
    from atomicedge.compose import artifact
    output, cache_root = Path(job["artifact"]), Path(job["cache_root"])
    writer = getattr(artifact, "write_image", None)
    if writer is not None:
        state = AptState(sources, cache_root, job.get("arch") or build.host_arch())
        writer(job["compose_type"], repo, ref, commit, output, state=state,
               cache_root=cache_root, name=f"{bp.name}:{bp.version}")
    elif job["compose_type"] == "edge-commit":
        build.write_artifact(repo, ref, commit, output)
    else:
        raise UsageError(f"image type {job['compose_type']!r} has no artifact writer")


def run(job: dict[str, Any]) -> dict[str, Any]:
    bp = to_model(job["blueprint"])
    src = job["sources"]
    sources = Sources(src["name"], src["text"],
                      Path(src["offline_dir"]) if src.get("offline_dir") else None)
    work = Path(job["work"])
    repo_path = work / "repo"
    arch = job.get("arch")
    ostree = job.get("ostree") or {}
    steps = EventSteps(total_weight(bool(ostree.get("url"))))
    ref = ostree.get("ref") or build.default_ref(bp, arch or build.host_arch())
    parent = "none"
    if ostree.get("url"):
        with steps.step("pull parent commit"):
            parent = _parent(repo_path, ostree, ref)
    req = build.ComposeRequest(bp, repo_path, sources, ref=ref, parent=parent,
                               profile=job["profile"], image_type=job["compose_type"],
                               cache_root=Path(job["cache_root"]), arch=arch)
    res = build.compose(req, steps)
    with steps.step(f"{job['compose_type']} artifact"):
        write_image(job, bp, sources, Repo.open(repo_path), res.ref, res.commit)
    return {"commit": res.commit, "ref": res.ref, "parent": res.parent,
            "root_tree": res.root_tree, "packages": res.packages,
            "tree_cached": res.tree_cached, "timings": res.timings}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Canceled()


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG: die with the worker
    if str(os.getppid()) != os.environ.get("ATOMICEDGE_WORKER_PID", str(os.getppid())):
        return 1
    handler = _LogToEvents()
    for name in ("atomicedge.compose", "atomicedge.runner"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)
    job = json.loads(sys.stdin.read())
    start = time.monotonic()
    try:
        result = run(job)
    except Canceled:
        emit("error", msg="canceled", canceled=True)
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgid(0), signal.SIGKILL)   # whatever the build left running
        return 1
    except AtomicEdgeError as exc:
        emit("error", msg=str(exc))
        return 1
    except Exception as exc:  # reported as the compose's failure, not lost
        emit("error", msg=f"internal error: {type(exc).__name__}: {exc}")
        return 1
    result["seconds"] = round(time.monotonic() - start, 2)
    emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
