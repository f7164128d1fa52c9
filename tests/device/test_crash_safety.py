"""kill -9 inside deploy, stage, finalize, rollback, cleanup and upgrade, at every step.

Each operation first runs once to completion in a forked child that reports its fault points
(:mod:`atomicedge.ostree.faults`: every file-system step of the device code and of the
repository writes under it, per-file and per-object steps included).  Then, for every point N,
a fresh copy of the sysroot gets the operation in a forked child that is SIGKILLed by the test
when it reports point N (``tests/crashkit.py``): a kill counts only if the child reached that
step and died of SIGKILL there, never a run that finished.

After every kill:

* real ``ostree admin status`` reads the sysroot and lists exactly our deployment list, in
  our order; the deployment it lists first (the default boot entry) is the one our bootloader
  logic picks with the grubenv as the kill left it, it is complete (deployment directory,
  ``/etc``, origin, the kernel and initramfs its boot entry names, byte for byte), and it is
  the old OS before the operation's commit point (the ``boot/loader`` swap) and the new one
  after it - never a third state;
* our fsck and real ``ostree fsck`` pass;
* the interrupted operation is run again and succeeds, a cleanup removes every leftover, and
  the result is checked the same way (and against the operation's intended outcome).

The tiny hand-made tree keeps each point cheap; these are unit-level proofs (the nspawn power
cut tests boot composed images).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from devhelpers import commit_tiny, ostree_status_ids
from tests import crashkit

from atomicedge.device import bls, fetch, ops
from atomicedge.device import deploy as dp
from atomicedge.device import sysroot as sr
from atomicedge.device.decision import grub_step
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.origin import Origin
from atomicedge.ostree.fsck import fsck
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.remote import config as remotes

OS = "testos"
ORIGIN = "origin:testos/stable"


@dataclass(frozen=True)
class World:
    root: Path
    old: str     # deployed in every base sysroot
    new: str     # the update
    third: str   # a second update (re-staging)
    ready: Path  # sysroot: old deployed, new and third in its repo
    bare: Path   # sysroot: old deployed, the update only on the remote (file://)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with crashkit.scratch("device-crash") as d:
        yield d


@pytest.fixture(scope="module")
def world(scratch: Path) -> World:
    w = scratch / "world"
    w.mkdir()
    remote = Repo.init(w / "remote", "archive")
    old = commit_tiny(remote, w, "1")
    new = commit_tiny(remote, w, "2", kernel="kernel-2")
    third = commit_tiny(remote, w, "3", ref="testos/next", kernel="kernel-3")
    bare = sr.init_fs(w / "bare")
    sr.os_init(bare, OS)
    remotes.add(bare.repo, "origin", f"file://{remote.path}", gpg_verify=False)
    fetch.pull(bare.repo, "origin", "testos/stable", commit=old)
    dp.deploy(bare, OS, old, Origin.new(ORIGIN), ["rw"])
    GrubEnv(bare.grubenv_path).write({})
    _copy(bare.path, w / "ready")
    ready = sr.Sysroot.open(w / "ready")
    fetch.pull(ready.repo, "origin", "testos/stable")
    fetch.pull(ready.repo, "origin", "testos/next")
    return World(w, old, new, third, ready.path, bare.path)


def _copy(src: Path, dest: Path) -> None:
    crashkit.copy_tree(src, dest)  # cp -a: keeps the deployments' hardlinks to the repo


def _open(p: Path) -> sr.Sysroot:
    return sr.Sysroot.open(p)


# -- the operations, their starting states and their intended outcomes -------------------

@dataclass(frozen=True)
class Case:
    base: str                                     # "ready" or "bare"
    setup: Callable[[sr.Sysroot, World], object]  # run once, before the copies are taken
    op: Callable[[sr.Sysroot, World], object]     # what is killed, then retried
    before: str                                   # default boot entry before: old/new/third
    after: str                                    # ... once the op's boot swap is done
    staged_after: str | None = None               # the staged commit the op leaves
    minimum: int = 0                              # verified kills this case must reach
    toggles: bool = False                         # run again after its swap, it swaps back


def _nothing(s: sr.Sysroot, w: World) -> None:
    return None


def _stage_new(s: sr.Sysroot, w: World) -> object:
    return dp.stage(s, OS, w.new, Origin.new(ORIGIN))


def _stage_third(s: sr.Sysroot, w: World) -> object:
    return dp.stage(s, OS, w.third, Origin.new("origin:testos/next"))


def _deploy_new(s: sr.Sysroot, w: World) -> object:
    return dp.deploy(s, OS, w.new, Origin.new(ORIGIN), arm_counter=True)


def _deploy_third(s: sr.Sysroot, w: World) -> object:
    return dp.deploy(s, OS, w.third, Origin.new("origin:testos/next"))


def _garbage(s: sr.Sysroot, w: World) -> None:
    """new deployed over old, plus what interrupted runs leave: a stray deployment, a
    temporary directory, an orphan commit (ref deleted) with objects to prune."""
    _deploy_new(s, w)
    dp.prepare(s, OS, w.third, Origin.new("origin:testos/next"), [])
    (s.stateroot(OS) / "deploy" / ".junk.tmp").mkdir()
    commit_tiny(s.repo, s.path.parent, "4", ref="orphan/x", kernel="kernel-4")
    s.repo.set_ref("orphan/x", None)


def _deployed_and_staged(s: sr.Sysroot, w: World) -> None:
    """[new, old] deployed, third staged."""
    _deploy_new(s, w)
    _stage_third(s, w)


# minimum: the verified kills each case must reach (its points today, less a few); they add
# up to more than 200 whatever the order the tests run in
CASES: dict[str, Case] = {
    "deploy": Case("ready", _nothing, _deploy_new, "old", "new", minimum=22),
    "stage": Case("ready", _nothing, _stage_new, "old", "old", staged_after="new", minimum=10),
    "restage": Case("ready", _stage_new, _stage_third, "old", "old", staged_after="third",
                    minimum=14),
    "finalize": Case("ready", _stage_new, lambda s, w: dp.finalize(s), "old", "new",
                     minimum=16),
    "rollback": Case("ready", _deploy_new, lambda s, w: dp.rollback(s), "new", "old",
                     minimum=12, toggles=True),
    "cleanup": Case("ready", _garbage, lambda s, w: dp.cleanup(s), "new", "new", minimum=14),
    "deploy-over-staged": Case("ready", _stage_new, _deploy_third, "old", "third",
                               minimum=23),
    "upgrade": Case("bare", _nothing, lambda s, w: ops.upgrade(s, OS), "old", "new",
                    minimum=45),
    "deploy-rev": Case("ready", _nothing, lambda s, w: ops.deploy_rev(s, OS, w.third), "old",
                       "third", minimum=22),
    "cleanup-pending-rollback": Case(
        "ready", _deployed_and_staged, lambda s, w: ops.cleanup(s, pending=True, rollback=True),
        "new", "new", minimum=28),
}


def test_the_minimums_add_up_to_200_kills() -> None:
    assert sum(c.minimum for c in CASES.values()) >= 200


# -- judging a sysroot ----------------------------------------------------------------------

def _judge(path: Path, expected: str) -> sr.Sysroot:
    """Real ``ostree admin status`` agrees with us and the default entry boots ``expected``;
    both fscks pass."""
    s = _open(path)
    real_fsck = subprocess.Popen(["ostree", "fsck", f"--repo={s.repo_path}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _judge_boot(s, expected)
        report = fsck(s.repo)
        assert report.ok, report.as_dict()
    finally:
        out = real_fsck.communicate()[0]
    assert real_fsck.returncode == 0, out
    return s


def _judge_boot(s: sr.Sysroot, expected: str) -> None:
    path = s.path
    ours = s.deployments()
    theirs = ostree_status_ids(path)  # real `ostree admin status`, default first
    assert theirs == [d.id for d in ours], "ostree admin status disagrees with our list"
    assert theirs, "no deployment to boot"
    env = GrubEnv(s.grubenv_path).read() if GrubEnv(s.grubenv_path).exists() else {}
    picked = grub_step(env, len(ours)).entry  # what our bootloader logic boots next
    assert ours[picked].id == theirs[0], "our bootloader would not boot ostree's default"
    default = ours[0]
    assert default.csum == expected, f"default boots {default.csum}, expected {expected}"
    _assert_complete(s, default, bls.read_entries(s.boot / "loader" / "entries")[0])


def _assert_complete(s: sr.Sysroot, d: sr.Deployment, entry: bls.BootEntry) -> None:
    ddir = s.deployment_dir(d)
    assert (ddir / "etc").is_dir() and (ddir / "usr" / "etc").is_dir()
    assert (ddir / "etc" / "release").read_text() == (ddir / "usr/etc/release").read_text()
    assert s.load_origin(d).refspec
    _kver, vmlinuz, initramfs = sr.find_kernel(ddir)
    assert entry.linux is not None and entry.initrd is not None
    assert (s.boot / entry.linux.lstrip("/")).read_bytes() == vmlinuz.read_bytes()
    assert initramfs is not None
    assert (s.boot / entry.initrd.lstrip("/")).read_bytes() == initramfs.read_bytes()


def _assert_no_leftovers(s: sr.Sysroot, w: World, case: Case) -> None:
    """After the retry and a cleanup: only what the deployment list (and the staged
    deployment) needs is left - no half-made deployment, kernel, staging dir or pin ref."""
    deps = s.deployments()
    staged = dp.read_staged(s)
    live = [*deps, *([staged.deployment()] if staged else [])]
    assert (staged.csum if staged else None) == (
        getattr(w, case.staged_after) if case.staged_after else None)
    names = {n for d in live for n in (d.name, f"{d.name}.origin")}
    assert {p.name for p in (s.stateroot(OS) / "deploy").iterdir()} == names
    assert {p.name for p in (s.boot / "ostree").iterdir()} == {
        f"{d.osname}-{d.bootcsum}" for d in live}
    assert not [p for p in (s.repo_path / "tmp").iterdir() if p.name.startswith("staging-")]
    bv = s.bootversion()
    pins = {k: v for k, v in s.repo.list_refs().items() if k.startswith("ostree/")}
    assert pins == {f"ostree/{bv}/1/{i}": d.csum for i, d in enumerate(deps)}
    assert not s.repo.has_object(_orphan_or_none(s), ObjectType.COMMIT)


def _orphan_or_none(s: sr.Sysroot) -> str:
    """Any commit no ref reaches must be pruned: return one, or a checksum no repo has."""
    reached = set(s.repo.list_refs().values())
    for csum, objtype in s.repo.iter_objects():
        if objtype == ObjectType.COMMIT and csum not in reached:
            return csum
    return "0" * 64


# -- the proof ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_kill9_at_every_step_boots_old_or_new_and_a_retry_succeeds(
        world: World, name: str, scratch: Path,
        record_property: Callable[[str, object], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    work = scratch / name
    work.mkdir()
    start = work / "start"
    _copy(getattr(world, case.base), start)
    case.setup(_open(start), world)
    _judge(start, getattr(world, case.before))

    def run(path: Path) -> Callable[[], object]:
        return lambda: case.op(_open(path), world)

    probe = work / "probe"
    _copy(start, probe)
    points = crashkit.record(run(probe))
    verified: list[crashkit.Kill] = []
    for n in range(1, len(points) + 1):
        s_path = work / "s"
        _copy(start, s_path)
        kill = crashkit.kill_at(run(s_path), n)
        if kill is None:
            continue  # finished before point n: not a kill
        assert kill.points == tuple(points[:n]), "the operation's steps are not deterministic"
        swapped = "after-swap" in points[:n]
        _judge(s_path, getattr(world, case.after if swapped else case.before))
        # the retry: the same operation, on what the kill left
        case.op(_open(s_path), world)
        dp.cleanup(_open(s_path))
        expected = case.before if case.toggles and swapped else case.after
        s = _judge(s_path, getattr(world, expected))
        _assert_no_leftovers(s, world, case)
        if case.staged_after:  # the retried stage is usable: it finalizes
            dp.finalize(s)
            _judge(s_path, getattr(world, case.staged_after))
        verified.append(kill)
    names = sorted({k.name for k in verified})
    with capsys.disabled():  # the count shows in every run, not only with -s
        print(f"\n{name}: {len(verified)} verified SIGKILLs out of {len(points)} points "
              f"({len(names)} distinct steps: {', '.join(names)})")
    record_property("verified_kills", len(verified))
    assert len(verified) == len(points)  # every point of the operation was hit
    assert len(verified) >= case.minimum
