"""kill -9 at every file-system step (and at random times) of deploy, stage, finalize,
rollback and cleanup: the sysroot must always boot the old or the new commit, our fsck and
``ostree fsck`` pass, real ``ostree admin status`` reads it, and a retry succeeds.

Each point is a subprocess that ``os._exit``s at its N-th step (``ATOMICEDGE_DEVICE_CRASH_AT``)
or is SIGKILLed after a random delay - exactly what a power cut does to the process.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devhelpers import commit_tiny

from atomicedge.device import deploy as dp
from atomicedge.device import sysroot as sr
from atomicedge.device.origin import Origin
from atomicedge.lab import bootloader
from atomicedge.ostree.fsck import fsck

SRC = str(Path(__file__).resolve().parents[2] / "src")
CHILD = {
    "deploy": "dp.deploy(s, 'testos', NEW, Origin.new('testos/stable'), arm_counter=True)",
    "stage": "dp.stage(s, 'testos', NEW, Origin.new('testos/stable'))",
    "finalize": "dp.finalize(s)",
    "rollback": "dp.rollback(s)",
    "cleanup": "dp.cleanup(s)",
}
POINTS: list[int] = []


def _child_code(op: str, new: str) -> str:
    return (f"import sys; sys.path.insert(0, {SRC!r})\n"
            "from atomicedge.device import deploy as dp, sysroot as sr\n"
            "from atomicedge.device.origin import Origin\n"
            f"s = sr.Sysroot.open(sys.argv[1]); NEW = {new!r}\n{CHILD[op]}\n")


def _run(op: str, s: Path, new: str, env: dict[str, str]) -> int:
    return subprocess.run([sys.executable, "-c", _child_code(op, new), str(s)],
                          env={**os.environ, **env}, capture_output=True).returncode


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    w = tmp_path_factory.mktemp("crash")
    s = sr.init_fs(w / "base")
    sr.os_init(s, "testos")
    old = commit_tiny(s.repo, w, "1")
    dp.deploy(s, "testos", old, Origin.new("testos/stable"), ["rw"])
    new = commit_tiny(s.repo, w, "2", kernel="kernel-2")
    return {"w": w, "base": w / "base", "old": old, "new": new}


def _prepare(base: dict[str, object], op: str, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["cp", "-a", str(base["base"]), str(dest)], check=True)
    s = sr.Sysroot.open(dest)
    new = str(base["new"])
    if op == "finalize":
        dp.stage(s, "testos", new, Origin.new("testos/stable"))
    elif op in ("rollback", "cleanup"):
        dp.deploy(s, "testos", new, Origin.new("testos/stable"))
        if op == "cleanup":  # garbage: a stray deployment, a stale tmp dir, an orphan commit
            dp.prepare(s, "testos", str(base["old"]), Origin.new("x"), [])
            (s.stateroot("testos") / "deploy" / ".junk.tmp").mkdir()
            orphan = dest.parent / f"orphan-{dest.name}"
            shutil.rmtree(orphan, ignore_errors=True)
            orphan.mkdir()
            commit_tiny(s.repo, orphan, "3", ref="orphan/x", kernel="kernel-3")
            s.repo.set_ref("orphan/x", None)


def _check(s_path: Path, base: dict[str, object]) -> str:
    s = sr.Sysroot.open(s_path)
    choice = bootloader.select(s)  # what the next boot picks
    booted_csum = choice.deployment_dir.name.split(".")[0]
    assert booted_csum in (base["old"], base["new"])
    for d in s.deployments():
        assert s.deployment_dir(d).is_dir()
        assert (s.deployment_dir(d) / "etc").is_dir()
        s.load_origin(d)
    st = subprocess.run(["ostree", "admin", f"--sysroot={s_path}", "status"],
                        capture_output=True, text=True)
    assert st.returncode == 0, st.stderr
    assert booted_csum in st.stdout
    report = fsck(s.repo)
    assert report.ok, report.as_dict()
    of = subprocess.run(["ostree", "fsck", f"--repo={s.repo_path}"], capture_output=True,
                        text=True)
    assert of.returncode == 0, of.stderr
    return booted_csum


@pytest.mark.parametrize("op", list(CHILD))
def test_kill_at_every_step_leaves_old_or_new_bootable(base: dict[str, object], op: str,
                                                       tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    _prepare(base, op, probe)
    steps_file = tmp_path / "steps"
    assert _run(op, probe, str(base["new"]), {"ATOMICEDGE_DEVICE_STEPS": str(steps_file)}) == 0
    n_steps = len(steps_file.read_text().splitlines())
    assert n_steps >= 3
    rng = random.Random(op)
    points = [("step", n) for n in range(1, n_steps + 1)]
    points += [("time", rng.uniform(0.05, 0.6)) for _ in range(max(0, 42 - n_steps))]
    outcomes = set()
    for kind, at in points:
        s_path = tmp_path / "s"
        _prepare(base, op, s_path)
        if kind == "step":
            rc = _run(op, s_path, str(base["new"]), {"ATOMICEDGE_DEVICE_CRASH_AT": str(at)})
            assert rc == 137
        else:
            proc = subprocess.Popen([sys.executable, "-c", _child_code(op, str(base["new"])),
                                     str(s_path)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(float(at))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        outcomes.add(_check(s_path, base))
        POINTS.append(1)
        # recovery: running the operation again (or a cleanup) must succeed
        if op in ("deploy", "stage", "cleanup"):
            assert _run("cleanup", s_path, str(base["new"]), {}) == 0
            _check(s_path, base)
    assert outcomes  # at least one of old/new was observed
    assert len(points) >= 40


def test_suite_covered_at_least_200_points() -> None:
    assert len(POINTS) >= 200
