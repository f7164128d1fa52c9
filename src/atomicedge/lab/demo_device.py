"""The seed demo's OS-update act, for ``make demo``, on the gateway images composed in act 2.

As in the seed: the web server publishes v1 (``version-1``), a device is installed from it over
HTTP and boots (``lab up``: systemd-nspawn on the lab network); the server then publishes v2
(+strace). The device's own timers find, stage and apply it; the seed's ``orig.txt`` check,
delivered by the blueprint, fails three boots in a row, GRUB falls back, and ``which strace``
fails on the old OS. Then ``orig.txt`` is removed inside the device, the update is staged again
by hand (the seed's ``systemctl start rpm-ostreed-automatic``), the apply timer reboots, and
v2 sticks. The server's counters are printed for each step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomicedge.errors import NotFoundError, ToolError
from atomicedge.lab.devices import Lab
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum

PORT = 8480
DEVICE = "edge1"
# the seed's timers, short: rpm-ostreed-automatic (stage) and applyupdate (reboot into it)
AGENT_TOML = """policy = "stage"
schedule = "*:*:0/5"
splay = "0"

[apply]
schedule = "*:*:0/5"
"""
SHOW = ("Boot Status", "FALLBACK", "required health checks failed", "agent: stage",
        "apply: rebooting", "orig.txt (", "Rebooting", "Finalized")
ATOMICEDGE = str(Path(sys.executable).with_name("atomicedge"))


class _Act:
    """State of the act: the lab, the served repository, the console follower."""

    def __init__(self, workdir: Path, repo: Repo, ref: str, console: Any) -> None:
        self.workdir, self.repo, self.ref, self.console = workdir, repo, ref, console
        self.lab = Lab.open(workdir / "lab")
        self.url = f"http://{self.lab.net.host_ip}:{PORT}"
        self.offset = 0
        self.last = {"files": 0, "bytes": 0}
        self.server: subprocess.Popen[bytes] | None = None

    def say(self, text: str) -> None:
        self.console.print(text)

    def cmd(self, text: str) -> None:
        self.console.print(f"  [dim]$[/] {text}", markup=True, highlight=False)

    def stats(self, step: str) -> dict[str, int]:
        def get() -> dict[str, Any]:
            with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        now = self.lab.in_host(get)
        delta = {"files": now["files"] - self.last["files"],
                 "bytes": now["bytes"] - self.last["bytes"]}
        self.last = {"files": now["files"], "bytes": now["bytes"]}
        self.say(f"  [cyan]server:[/] {step}: {delta['files']:,} files requested, "
                 f"{delta['bytes']:,} bytes (total {now['files']:,} files, "
                 f"{now['bytes']:,} bytes)")
        return delta

    def publish(self, commit: str, label: str) -> None:
        self.repo.set_ref(self.ref, commit)
        pubsum.update(self.repo)
        self.say(f"[bold]server:[/] publishes {label} {commit[:12]} on {self.ref}")

    def run_host(self, argv: list[str]) -> str:
        self.cmd("atomicedge lab host -- atomicedge " + " ".join(argv[1:]))
        proc = subprocess.run(self.lab.host_argv(argv), capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            raise ToolError(f"{' '.join(argv[:3])} failed", stderr=proc.stderr[-2000:])
        return proc.stdout

    def dev(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.cmd(f"atomicedge lab exec {DEVICE} -- {script}")
        proc = self.lab.run(DEVICE, ["/bin/sh", "-c", script])
        for line in (proc.stdout + proc.stderr).splitlines():
            self.console.print(f"    {line}", markup=False, highlight=False)
        if check and proc.returncode != 0:
            raise ToolError(f"{script!r} failed in the device (exit {proc.returncode})")
        return proc

    def follow(self) -> None:
        """Print the console lines that tell the story (boots, health, fallback)."""
        path = self.lab.device(DEVICE).dir / "console.log"
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:  # the first boot has not started yet
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].decode(errors="replace").splitlines():
            if raw.startswith("[lab] boot") and "ended" not in raw:
                self.say(f"  [yellow]{raw[6:].split(' grubenv')[0]}[/]")
            elif any(key in raw for key in SHOW) and "\x1b" not in raw:
                self.console.print("      " + raw.split("]: ", 1)[-1], markup=False,
                                   highlight=False)

    def wait(self, what: str, cond: Callable[[dict[str, Any]], bool],
             timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.follow()
            d = self.lab.device(DEVICE)
            if d.leader is not None and cond(d.state):
                self.lab.wait(DEVICE, timeout=max(30.0, deadline - time.monotonic()))
                self.follow()
                return
            if time.monotonic() > deadline or d.status in ("stopped", "failed", "dead"):
                raise ToolError(f"the device did not {what} (state {d.status})",
                                f"see {d.dir / 'console.log'}")
            time.sleep(0.5)


def _history(repo: Repo, ref: str) -> tuple[str, str]:
    v2 = repo.resolve_rev(ref)
    v1 = repo.load_commit(v2).parent
    if v1 is None or not repo.has_object(v1, ObjectType.COMMIT):
        raise NotFoundError(f"{ref} has no parent commit in {repo.path}",
                            "act 4 needs act 2's composed v1 and v2")
    return v1, v2


def _serve(act: _Act, served: Path) -> None:
    argv = [ATOMICEDGE, "repo", "serve", "--repo", str(served), "--bind",
            act.lab.net.host_ip, "--port", str(PORT)]
    act.cmd("atomicedge lab host -- atomicedge " + " ".join(argv[1:]) + " &")
    with open(act.workdir / "serve.log", "wb") as log:
        act.server = subprocess.Popen(act.lab.host_argv(argv), stdout=log,
                                      stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            act.stats("started")
            return
        except OSError:
            if time.monotonic() > deadline or act.server.poll() is not None:
                raise ToolError("repo serve did not start on the lab network",
                                stderr=(act.workdir / "serve.log").read_text()[-2000:]) \
                    from None
            time.sleep(0.2)


def _install(act: _Act, sysroot: Path) -> None:
    act.say(f"[bold]device:[/] installing {DEVICE} from {act.url} (the installer runs on the "
            "lab network)")
    act.run_host([ATOMICEDGE, "device", "install", "--sysroot", str(sysroot), "--osname",
                  "edge", "--url", act.url, "--ref", act.ref])
    act.stats("install")
    (deployment,) = (sysroot / "ostree/deploy/edge/deploy").glob("*.0")
    (deployment / "etc/atomicedge/agent.toml").write_text(AGENT_TOML)
    act.say("[bold]device:[/] provisioned /etc/atomicedge/agent.toml (as a kickstart %post "
            "would): stage every 5 s, apply timer every 5 s")


def _scenario(act: _Act, v1: str, v2: str, sysroot: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _install(act, sysroot)
    act.cmd(f"atomicedge lab up {DEVICE} --sysroot {sysroot} --wait")
    act.lab.up(DEVICE, sysroot)
    act.wait("boot", lambda st: True)
    act.dev("atomicedge device status")
    act.dev("cat /etc/greenboot/orig.txt /etc/greenboot/current.txt")
    act.dev("systemctl list-timers --no-pager 'atomicedge-*'")
    act.publish(v2, "v2 (+strace)")
    act.say("[bold]device:[/] its timers stage v2, the apply timer reboots into it; the "
            "seed's check fails on v2 ...")
    act.wait("fall back", lambda st: st.get("entry") == 1)
    out["first_attempt"] = act.stats("first attempt (download of the update)")
    out["fallback_strace"] = act.dev("which strace", check=False).returncode
    act.dev("atomicedge device status -v")
    act.say("[bold]device:[/] second attempt: remove orig.txt and stage v2 again by hand "
            "(the seed's `systemctl start rpm-ostreed-automatic`)")
    act.dev("rm -f /etc/greenboot/orig.txt")
    act.dev("atomicedge device upgrade")
    out["second_attempt"] = act.stats("second attempt (content already on the device)")
    act.wait("boot v2", lambda st: str(st.get("deployment", "")).startswith(v2)
             and st.get("entry") == 0)
    out["final_strace"] = act.dev("which strace", check=False).returncode
    act.dev("atomicedge device status")
    act.dev("cat /etc/greenboot/orig.txt /etc/greenboot/current.txt")
    out["boots"] = act.lab.device(DEVICE).state["boots"]
    out["history"] = act.lab.device(DEVICE).state["history"]
    return out


def run(workdir: Path, repo_path: Path, ref: str, console: Any) -> dict[str, Any]:
    """Returns figures for the lead's summary (boots, seconds, server counters per step)."""
    t0 = time.monotonic()
    source = Repo.open(repo_path)
    v1, v2 = _history(source, ref)
    served = workdir / "served-repo"
    subprocess.run(["cp", "-al", str(repo_path), str(served)], check=True)
    act = _Act(workdir, Repo.open(served), ref, console)
    act.publish(v1, "v1")
    try:
        _serve(act, served)
        out = _scenario(act, v1, v2, workdir / "device-sysroot")
    finally:
        act.lab.down_all()
        if act.server is not None:
            act.server.terminate()
            act.server.wait(timeout=30)
    out.update(v1=v1, v2=v2, seconds=round(time.monotonic() - t0, 1),
               fallback_seen=out["fallback_strace"] != 0, final_commit_strace=
               out["final_strace"] == 0)
    return out
