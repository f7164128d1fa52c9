"""The compose library call: blueprint -> OS tree from Debian packages -> OSTree commit.

``compose(request, steps)`` is what the CLI runs today and what a composer service with a queue
will run later, unchanged: it takes a plain request value, reports named, timed steps to a
``Steps`` sink, and returns a plain result. Every check that can fail on user input (blueprint,
unknown packages, refs, parent) runs before anything is written.

Recompose fast path: the commit records ``atomicedge.inputhash`` = hash(tree cache key,
blueprint customizations, this package's code). When the parent already has that input hash,
the tree would be identical, so the new commit reuses the parent's root tree (rpm-ostree does
the same with its inputhash), and the build takes well under a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import posixpath
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from atomicedge.compose import cache as cache_mod
from atomicedge.compose import closure, containers, incremental, mmdebstrap, ostreeprep
from atomicedge.compose import depsolve as ds
from atomicedge.compose.apt import AptState, Sources, host_arch
from atomicedge.compose.blueprint import Blueprint
from atomicedge.compose.custom import accounts, files, firewall, services, system
from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree.gvariant import Variant
from atomicedge.ostree.objects import Commit, ObjectType
from atomicedge.ostree.repo import Repo, validate_ref
from atomicedge.workload import podman_defaults

log = logging.getLogger("atomicedge.compose")
IMAGE_TYPES = ("edge-commit", "edge-container")
DISK_TYPES = ("edge-raw-image", "qcow2")   # bootable disks: compose/disk.py, written by the CLI
BLUEPRINT_DRACUT = "/etc/dracut.conf.d/"     # blueprint files here rebuild the initramfs


@dataclass
class ComposeRequest:
    blueprint: Blueprint
    repo: Path
    sources: Sources
    ref: str | None = None
    parent: str | None = None
    url: str | None = None
    profile: str = "edge"
    image_type: str = "edge-commit"
    cache_root: Path | None = None
    use_cache: bool = True
    arch: str | None = None


@dataclass
class ComposeResult:
    commit: str
    ref: str
    root_tree: str
    parent: str | None
    tree_key: str
    tree_cached: bool
    commit_reused_tree: bool
    packages: int
    kernel: str | None
    timings: dict[str, float] = field(default_factory=dict)


class Steps:
    """Progress sink: a named, timed step per phase. Subclass to draw (rich) or collect."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.started(name)
        yield
        self.timings[name] = time.monotonic() - start
        self.finished(name, self.timings[name])

    def started(self, name: str) -> None:
        log.info("compose: %s", name)

    def finished(self, name: str, seconds: float) -> None:
        log.info("compose: %s done in %.2f s", name, seconds)

    def note(self, text: str) -> None:
        log.info("compose: %s", text)


def default_ref(bp: Blueprint, arch: str) -> str:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return f"debian/{bp.major}/{machine}/edge"


def resolve_url_parent(repo: Repo, url: str, ref: str) -> str:
    """``GET <url>/refs/heads/<ref>`` then fetch that commit object (metadata only)."""
    from atomicedge.remote.pull import pull
    target = f"{url.rstrip('/')}/refs/heads/{ref}"
    try:
        with urllib.request.urlopen(target, timeout=30) as resp:
            csum = resp.read().decode().strip()
    except (OSError, ValueError) as exc:
        raise NotFoundError(f"--url: cannot read {target}: {exc}",
                            "check the URL and that the ref exists there") from None
    if len(csum) != 64:
        raise NotFoundError(f"--url: {target} does not hold a commit checksum")
    if not repo.has_object(csum, ObjectType.COMMIT):
        pull(repo, url, [f"{ref}@{csum}"], commit_metadata_only=True)
    return csum


def input_hash(tree_key: str, bp: Blueprint,
               images: tuple[containers.Resolved, ...] = ()) -> str:
    """Everything the final tree depends on besides the package tree (see module doc): the
    blueprint's customizations, the builder's code, the device closure + units it ships, and
    the embedded container images by digest (``[[containers]]``, resolved when the compose
    starts: a new image behind the same tag is a new input)."""
    code = hashlib.sha256()
    for src in sorted(Path(__file__).parent.rglob("*.py")):
        code.update(src.read_bytes())
    custom = dataclasses.asdict(bp.customizations)
    blob = json.dumps({"tree": tree_key, "name": bp.name, "custom": custom,
                       "code": code.hexdigest(), "closure": closure.compute().digest(),
                       "units": closure.units_digest(),
                       "containers": [i.hash_input() for i in images]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _install_edge_base(tree: Path) -> None:
    """The edge base, before the blueprint's customizations (so a blueprint can put files in
    greenboot's directories or override the agent's defaults): the device agent's units,
    timers and greenboot directories, and the device closure on the image's python3."""
    from atomicedge.device.image import install_device_files
    from atomicedge.workload.install import install_workload_files
    install_device_files(tree)
    install_workload_files(tree)
    closure.install(tree)


def _customize(tree: Path, bp: Blueprint, profile: str) -> None:
    cust = bp.customizations
    accounts.apply(tree, bp)
    if podman_defaults.wants_podman([p.name for p in bp.packages]):
        podman_defaults.install_podman_defaults(tree, [u.name for u in cust.users],
                                                image_store=bool(bp.containers))
    files.apply_dirs(tree, cust.directories)
    files.apply_files(tree, cust.files)
    system.apply(tree, cust)
    firewall.apply(tree, cust.firewall)
    extra: tuple[str, ...] = ()
    if profile == "edge" and not cust.firewall.empty():
        extra = ("firewalld.service",)
    services.apply(tree, cust.services, extra)


def blueprint_dracut(bp: Blueprint, tree: Path) -> bool:
    """Whether the image's initramfs must be made again: a blueprint file under
    /etc/dracut.conf.d/ (``drivers=""`` to opt back into Debian's full generic initramfs, or
    ``add_drivers+=``) applies to it. Without one the package tree's initramfs is used as is."""
    return (tree / "usr/bin/dracut").exists() and any(
        posixpath.normpath(f.path).startswith(BLUEPRINT_DRACUT) for f in bp.customizations.files)


def _metadata(bp: Blueprint, inhash: str, prep: dict[str, object]) -> dict[str, Variant]:
    meta = {"version": Variant("s", bp.version),
            "atomicedge.inputhash": Variant("s", inhash),
            "atomicedge.blueprint": Variant("s", bp.name)}
    if bp.customizations.kernel_append:
        meta["atomicedge.kargs"] = Variant("s", bp.customizations.kernel_append)
    return meta


def _reuse_commit(repo: Repo, parent: str, bp: Blueprint, inhash: str, ref: str) -> str | None:
    """New commit on ``parent``'s root tree when the inputs are unchanged, else None."""
    prev = repo.load_commit(parent)
    var = prev.metadata.get("atomicedge.inputhash")
    if var is None or var.value != inhash:
        return None
    meta = dict(prev.metadata)
    meta["version"] = Variant("s", bp.version)
    commit = Commit(prev.root_tree, prev.root_meta, meta, parent,
                    f"{bp.name} {bp.version}", "", int(time.time()))
    with repo.transaction() as tx:
        csum = tx.write_metadata(ObjectType.COMMIT, commit.encode())
        tx.set_ref(ref, csum)
    return csum


def _check_request(req: ComposeRequest, repo: Repo, ref: str) -> str | None:
    if req.image_type not in IMAGE_TYPES + DISK_TYPES:
        raise UsageError(f"--type {req.image_type!r} is not supported",
                         f"supported: {', '.join(IMAGE_TYPES + DISK_TYPES)}")
    if req.profile not in ds.PROFILES:
        raise UsageError(f"--profile {req.profile!r} unknown", f"use {' or '.join(ds.PROFILES)}")
    validate_ref(ref)
    if req.parent and req.url:
        raise UsageError("--parent and --url are exclusive", "--url resolves the parent itself")
    if req.parent == "none":
        return None
    if req.parent:
        return repo.resolve_rev(req.parent)
    if req.url:
        return resolve_url_parent(repo, req.url, ref)
    return repo.read_ref(ref)


def _package_tree(req: ComposeRequest, trees: cache_mod.TreeCache, key: str,
                  state: AptState, res: ds.Resolution, steps: Steps) -> bool:
    """Make sure the cache holds the package tree ``key``; True when it was already there."""
    if req.use_cache and trees.has(key):
        steps.note(f"package tree cached ({key[:12]})")
        return True
    bp = req.blueprint
    meta = cache_mod.TreeMeta.of(bp.distro, bp.suite, state.arch, state.sources.key, res)
    if req.use_cache and incremental.from_cache(trees, key, state, meta, steps):
        return False
    with steps.step(f"mmdebstrap ({len(res.packages)} packages)"):
        trees.build(key, lambda tmp: mmdebstrap.build_tree(state, req.blueprint.suite,
                                                           list(res.includes), tmp), meta)
    return False


def prefetch(req: ComposeRequest, steps: Steps | None = None, *,
             update: bool = True) -> str:
    """Depsolve and build the package tree into the cache only (no repo touched).

    A queue can warm the cache for the next blueprint while the current one commits; the
    later ``compose`` of the same request then finds the tree. Returns the tree key."""
    steps = steps or Steps()
    arch = req.arch or host_arch()
    root = req.cache_root or cache_mod.default_root()
    state = AptState(req.sources, root, arch)
    res = ds.depsolve(req.blueprint, state, req.profile, update=update)
    key = cache_mod.tree_key(req.blueprint.distro, req.blueprint.suite, arch, res)
    _package_tree(req, cache_mod.TreeCache(root), key, state, res, steps)
    return key


def compose(req: ComposeRequest, steps: Steps | None = None) -> ComposeResult:
    """Build ``req.blueprint`` into a commit on ``ref`` in ``req.repo``."""
    steps = steps or Steps()
    bp = req.blueprint
    arch = req.arch or host_arch()
    ref = req.ref or default_ref(bp, arch)
    root = req.cache_root or cache_mod.default_root()
    # a missing repo is created only after depsolve: a bad blueprint writes nothing
    repo = Repo.open(req.repo) if (req.repo / "config").exists() else None
    parent = None
    if repo is not None:
        with steps.step("resolve parent"):
            parent = _check_request(req, repo, ref)
    state = AptState(req.sources, root, arch)
    with steps.step("depsolve"):
        res = ds.depsolve(bp, state, req.profile)
    images: tuple[containers.Resolved, ...] = ()
    if bp.containers:
        with steps.step(f"resolve containers ({len(bp.containers)})"):
            images = containers.resolve(bp.containers)
    if repo is None:
        steps.note(f"creating archive repository {req.repo}")
        repo = Repo.init(req.repo, mode="archive")
        parent = _check_request(req, repo, ref)
    key = cache_mod.tree_key(bp.distro, bp.suite, arch, res)
    inhash = input_hash(key, bp, images)
    if parent and req.use_cache:
        reused = _reuse_commit(repo, parent, bp, inhash, ref)
        if reused:
            steps.note("inputs unchanged since the parent: commit reuses its tree")
            prev = repo.load_commit(reused)
            return ComposeResult(reused, ref, prev.root_tree, parent, key, True, True,
                                 len(res.packages), None, steps.timings)
    trees = cache_mod.TreeCache(root)
    cached = _package_tree(req, trees, key, state, res, steps)
    work = Path(tempfile.mkdtemp(prefix="compose-", dir=root))
    tree = work / "tree"
    try:
        with steps.step("copy tree"):
            trees.working_copy(key, tree)
        if req.profile == "edge":
            with steps.step("edge base (device agent)"):
                _install_edge_base(tree)
        with steps.step("customizations"):
            _customize(tree, bp, req.profile)
        if images:
            with steps.step(f"containers ({len(images)} images)"):
                containers.embed(tree, images, work)
                containers.install_user_links(tree, [u.name for u in bp.customizations.users])
        if blueprint_dracut(bp, tree):
            with steps.step("initramfs (dracut with the blueprint's configuration)"):
                incremental.rebuild_initramfs(tree)
        with steps.step("ostree preparation"):
            prep = ostreeprep.prepare(tree)
        with steps.step("commit"):
            from atomicedge.ostree.commit import commit_directory
            csum = commit_directory(
                repo, tree, branch=ref, subject=f"{bp.name} {bp.version}",
                parent=parent or "none", metadata=_metadata(bp, inhash, prep),
                bootable=prep["kernel"] is not None)
    finally:
        mmdebstrap.remove_tree(work)
    commit = repo.load_commit(csum)
    return ComposeResult(csum, ref, commit.root_tree, parent, key, bool(cached), False,
                         len(res.packages), prep["kernel"], steps.timings)  # type: ignore[arg-type]


def write_artifact(repo: Repo, ref: str, commit: str, output: Path) -> None:
    """edge-commit tar: ``repo/`` (archive mode, this ref only) + ``compose.json``."""
    from atomicedge.compose.artifact import write_commit_tar
    write_commit_tar(repo, ref, commit, output)


def clear_tree_cache(root: Path | None = None) -> None:
    shutil.rmtree((root or cache_mod.default_root()) / "trees", ignore_errors=True)
