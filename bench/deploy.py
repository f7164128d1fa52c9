"""Deploy benchmark: our deploy vs ``ostree admin deploy`` of the same commit, and the full
update cycles of a lab device (systemd-nspawn on the lab network, updated by its own timers
from ``repo serve`` over HTTP).

Usage: .venv/bin/python bench/deploy.py [--runs N] [--skip-cycle] [--trees lab|commit]
       [--cycle-images composed|lab|both]
Trees: ``commit`` (default) = the v1/v2 minbase trees of bench/commit.py (v2 adds strace and
curl), ostree-ified (``etc`` -> ``usr/etc``, a dummy kernel); ``lab`` = the device test tree
(systemd, dbus, python3). Both deploys run on identical copies of the same sysroot, interleaved,
best of N; ours includes its cleanup/prune as ``ostree admin deploy`` does.

Cycles: the gateway images composed from examples/ (v1, v2 = v1 + strace, both with the
seed's orig.txt check) and the lab test tree (v1, v2), each installed over HTTP and booted with
``lab up``; agent and apply timers every 2 s. "good": orig.txt removed, seconds from "update
published" to "device on the new OS, green"; "bad": the check fails, seconds from "update
published" to "back on the old OS" (three red boots and GRUB's fallback, boot finished).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from atomicedge.device import deploy as dp
from atomicedge.device import sysroot as sr
from atomicedge.device.origin import Origin
from atomicedge.lab import testtree
from atomicedge.lab.devices import Lab
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum

REF = "edge/stable"


def _rm(path: Path) -> None:
    """ostree marks deployment roots immutable (chattr +i): clear that, then delete."""
    for d in path.glob("ostree/deploy/*/deploy/*"):
        if d.is_dir():
            subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    shutil.rmtree(path)


def _commit_tree(repo: Repo, w: Path, name: str, which: str) -> str:
    from atomicedge.ostree.commit import commit_directory
    if which == "lab":
        return testtree.lab_commit(repo, w, name, REF)
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_commit",
                                                  Path(__file__).with_name("commit.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tree = testtree.ostreeify(mod.ensure_tree(name), w / f"tree-{name}", version=name)
    try:
        return commit_directory(repo, tree, branch=REF, subject=name)
    finally:
        shutil.rmtree(tree)


def _deploy_compare(w: Path, runs: int, which: str) -> dict[str, float]:
    s = sr.init_fs(w / "base")
    sr.os_init(s, "edge")
    v1 = _commit_tree(s.repo, w, "v1", which)
    dp.deploy(s, "edge", v1, Origin.new(REF), ["rw"])
    v2 = _commit_tree(s.repo, w, "v2", which)
    ours, theirs = [], []
    for i in range(runs):
        for who in ("ours", "ostree"):
            dest = w / f"{who}-{i}"
            subprocess.run(["cp", "-a", str(w / "base"), str(dest)], check=True)
            subprocess.run(["sync"], check=True)
            t = time.perf_counter()
            if who == "ours":
                sysroot = sr.Sysroot.open(dest)
                dp.deploy(sysroot, "edge", v2, Origin.new(REF))
                dp.cleanup(sysroot)
                ours.append(time.perf_counter() - t)
            else:
                subprocess.run(["ostree", "admin", f"--sysroot={dest}", "deploy", "--os=edge",
                                REF], check=True, capture_output=True)
                theirs.append(time.perf_counter() - t)
            _rm(dest)
    o, t2 = min(ours), min(theirs)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {"ours_s": round(o, 3), "ostree_s": round(t2, 3), "ratio": round(o / t2, 2),
            "ours_median_s": round(mo, 3), "ostree_median_s": round(mt, 3),
            "median_ratio": round(mo / mt, 2)}


AGENT_TOML = """policy = "stage"
schedule = "*:*:0/2"
splay = "0"

[apply]
schedule = "*:*:0/2"
"""
PORT = 8480


class _Bench:
    """One lab, one served repository, devices installed over HTTP from it."""

    def __init__(self, w: Path, repo: Path, ref: str) -> None:
        self.w, self.ref = w, ref
        self.lab = Lab.open(w / "lab")
        self.served = Repo.open(repo)
        self.url = f"http://{self.lab.net.host_ip}:{PORT}"
        argv = [str(Path(sys.executable).with_name("atomicedge")), "repo", "serve", "--repo",
                str(repo), "--bind", self.lab.net.host_ip, "--port", str(PORT)]
        with open(w / "serve.log", "wb") as log:
            self.server = subprocess.Popen(self.lab.host_argv(argv), stdout=log,
                                           stderr=subprocess.STDOUT)

    def close(self) -> None:
        self.lab.down_all()
        self.server.terminate()
        self.server.wait(timeout=30)

    def publish(self, commit: str) -> float:
        self.served.set_ref(self.ref, commit)
        pubsum.update(self.served)
        return time.perf_counter()

    def install(self, dest: Path, provision: dict[str, str]) -> None:
        argv = [str(Path(sys.executable).with_name("atomicedge")), "device", "install",
                "--sysroot", str(dest), "--osname", "edge", "--url", self.url, "--ref",
                self.ref]
        for _ in range(300):  # the server may still be starting
            proc = subprocess.run(self.lab.host_argv(argv), capture_output=True, text=True)
            if proc.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"install failed: {proc.stderr}")
        (dep,) = (dest / "ostree/deploy/edge/deploy").glob("*.0")
        for rel, text in provision.items():
            target = dep / "etc" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if text == "@mask":
                target.symlink_to("/dev/null")
            else:
                target.write_text(text)

    def until(self, name: str, cond: Callable[[dict[str, Any]], bool]) -> float:
        """Seconds-stamp at which ``cond(state)`` holds and that boot has finished."""
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            d = self.lab.device(name)
            if d.leader is not None and cond(d.state):
                self.lab.wait(name)
                return time.perf_counter()
            time.sleep(0.1)
        raise SystemExit(f"{name}: timed out; see {self.lab.path}/devices/{name}/console.log")


def _cycles(w: Path, repo: Path, ref: str, v1: str, v2: str,
            provision: dict[str, str]) -> dict[str, float]:
    """Good update (orig.txt removed) and bad update (the seed's check fails) on lab devices;
    seconds from "update published" to "on the new OS, green" / "back on the old OS"."""
    b = _Bench(w, repo, ref)
    try:
        b.publish(v1)
        b.install(w / "template", {"atomicedge/agent.toml": AGENT_TOML, **provision})
        for name in ("good", "bad"):
            subprocess.run(["cp", "-a", str(w / "template"), str(w / name)], check=True)
        out: dict[str, float] = {}
        for name in ("good", "bad"):
            b.publish(v1)
            b.lab.up(name, w / name)
            b.lab.wait(name)
            if name == "good":
                b.lab.run(name, ["rm", "-f", "/etc/greenboot/orig.txt"])
            t0 = b.publish(v2)
            if name == "good":
                t1 = b.until(name, lambda st: str(st.get("deployment", "")).startswith(v2))
            else:
                t1 = b.until(name, lambda st: st.get("entry") == 1)
            out[name] = round(t1 - t0, 1)
            out[f"{name}_boots"] = b.lab.device(name).state["boots"]
            b.lab.down(name)
        return out
    finally:
        b.close()


def _composed(w: Path) -> tuple[Path, str, str, str]:
    from atomicedge.compose.apt import Sources
    from atomicedge.compose.build import ComposeRequest, compose
    from atomicedge.compose.validate import load
    examples = Path(__file__).resolve().parents[1] / "examples"
    commits: list[str] = []
    ref = ""
    for name in ("gateway-v1.toml", "gateway-v2.toml"):
        res = compose(ComposeRequest(load(examples / name), w / "repo", Sources.host(),
                                     parent=commits[-1] if commits else "none"))
        commits.append(res.commit)
        ref = res.ref
    return w / "repo", ref, commits[0], commits[1]


def _lab_tree(w: Path) -> tuple[Path, str, str, str]:
    repo = Repo.init(w / "repo", "archive")
    v1 = testtree.lab_commit(repo, w, "1.0", REF)
    v2 = testtree.lab_commit(repo, w, "2.0", REF)
    return w / "repo", REF, v1, v2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-cycle", action="store_true")
    ap.add_argument("--trees", choices=("commit", "lab"), default="commit")
    ap.add_argument("--cycle-images", choices=("composed", "lab", "both"), default="both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-", dir="/var/tmp") as tmp:
        w = Path(tmp)
        (w / "cmp").mkdir()
        res = _deploy_compare(w / "cmp", args.runs, args.trees)
        print(f"deploy v2 ({args.trees} trees, best of {args.runs}): ours {res['ours_s']} s, "
              f"ostree admin deploy {res['ostree_s']} s, ratio {res['ratio']}x (target <= 1.0); "
              f"medians {res['ours_median_s']} s vs {res['ostree_median_s']} s "
              f"= {res['median_ratio']}x", flush=True)
        _rm(w / "cmp")
        if args.skip_cycle:
            return
        kinds = ("composed", "lab") if args.cycle_images == "both" else (args.cycle_images,)
        for kind in kinds:
            cw = w / f"cycle-{kind}"
            cw.mkdir()
            images = _composed(cw) if kind == "composed" else _lab_tree(cw)
            # the lab tree's test driver powers the device off after each boot: masked here
            provision = {} if kind == "composed" else {
                "systemd/system/atomicedge-lab-driver.service": "@mask"}
            c = _cycles(cw, *images, provision)
            print(f"{kind} image as a lab device (timers every 2 s, update over HTTP): "
                  f"update published -> on the new OS, green: {c['good']} s; bad update "
                  f"(3 red boots + fallback) -> back on the old OS: {c['bad']} s "
                  f"({c['bad_boots']} boots)", flush=True)
            for d in cw.iterdir():
                if d.is_dir() and (d / "ostree").is_dir():
                    _rm(d)


if __name__ == "__main__":
    main()
