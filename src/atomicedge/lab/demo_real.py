"""The seed demo's OS-update act booted for real: ``atomicedge demo --real``, ``make demo-real``.

The act of :mod:`atomicedge.lab.demo_device`, but on a disk image in QEMU (TCG) with real GRUB
counting the boots, the Debian kernel, dracut's initramfs and systemd; every step is a product
command, printed as it is typed:

1. ``compose build gateway-v1.toml --type qcow2 --vm-agent --dhcp``: the commit and a disk whose
   update remote is the host's ``repo serve`` (``http://10.0.2.2:PORT``, QEMU's user network);
2. ``repo summary -u`` + ``repo serve`` on 127.0.0.1 publish v1; ``vm run`` boots the disk,
   ``vm wait`` waits for the command channel; the seed's check records ``orig.txt``;
3. v2 (+strace) is composed onto the served ref and published; in the guest
   ``device upgrade`` stages it over HTTP and ``systemctl reboot`` applies it;
4. the seed's check fails on v2: three red boots counted by GRUB, the fallback entry, the
   health service makes v1 the default again (``FALLBACK BOOT DETECTED``), ``strace`` is gone.
   The seconds from the reboot into the update to the old OS answering again are printed
   (the issue's "update applied -> back on the old OS");
5. the seed's second attempt: ``orig.txt`` removed, ``device upgrade``, reboot, v2 stays green.

The console lines that tell the story (GRUB's entry and counter, health results) are printed
while the VM boots. QEMU and the server are stopped by their PIDs at the end, also on error.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from atomicedge.errors import ToolError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ATOMICEDGE = str(Path(sys.executable).with_name("atomicedge"))
REF = "debian/12/x86_64/edge"
VM = "demo-gw"
BOOT_TIMEOUT = 1200.0        # one TCG boot: 30-60 s idle, minutes on a loaded 2-core machine
FALLBACK_TIMEOUT = 3600.0    # three red boots + the fallback boot
COMPOSE_TIMEOUT = 3600.0     # a cold compose runs mmdebstrap and dracut
SHOW = ("atomicedge-grub:", "Boot Status", "FALLBACK", "required health checks failed",
        "orig.txt (", "Finalized", "boot_success")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Act:
    """The act's state: workdir, console follower, the server and the VM's directory."""

    def __init__(self, workdir: Path, console: Any) -> None:
        self.workdir, self.console = workdir, console
        self.repo = workdir / "repo"
        self.disk = workdir / "gateway-v1.qcow2"
        self.port = _free_port()
        self.env = {**os.environ, "ATOMICEDGE_VM_DIR": str(workdir / "vms")}
        self.offset = 0
        self.server: subprocess.Popen[bytes] | None = None
        self.served = {"files": 0, "bytes": 0}

    def say(self, text: str) -> None:
        self.console.print(text)

    def run(self, args: list[str], *, timeout: float = 900.0, check: bool = True,
            show: bool = True) -> subprocess.CompletedProcess[str]:
        """``atomicedge ARGS`` as a user would type it; its output is printed indented."""
        if show:
            self.console.print(f"  [dim]$[/] atomicedge {shlex.join(args)}", markup=True,
                               highlight=False)
        proc = subprocess.run([ATOMICEDGE, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env)
        if show:
            for line in (proc.stdout + proc.stderr).splitlines():
                self.console.print(f"    {line}", markup=False, highlight=False)
        if check and proc.returncode != 0:
            raise ToolError(f"atomicedge {' '.join(args[:2])} failed (exit {proc.returncode})",
                            stderr=proc.stderr[-2000:])
        return proc

    def guest(self, cmd: str, *, check: bool = True,
              show: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["vm", "exec", VM, "--", "sh", "-c", cmd], check=check, show=show)

    def console_log(self) -> Path:
        return self.workdir / "vms" / VM / "console.log"

    def follow(self) -> str:
        """Print the new story lines of the serial console; returns the new text."""
        try:
            with open(self.console_log(), "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        end = data.rfind(b"\n") + 1
        self.offset += end
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", data[:end].decode(errors="replace"))
        for raw in text.splitlines():
            if any(key in raw for key in SHOW):
                self.console.print("      " + raw.strip().split("]: ", 1)[-1], markup=False,
                                   highlight=False)
        return text

    def wait_console(self, pattern: str, timeout: float) -> float:
        """Follow the console until ``pattern`` appears in new output; returns seconds."""
        rx, start, seen = re.compile(pattern), time.monotonic(), ""
        while True:
            seen = (seen + self.follow())[-20000:]
            if rx.search(seen):
                return time.monotonic() - start
            if time.monotonic() - start > timeout or not self.qemu_running():
                raise ToolError(f"the VM did not show {pattern!r} within {timeout:g} s",
                                f"see {self.console_log()}")
            time.sleep(1)

    def qemu_running(self) -> bool:
        try:
            pid = int((self.console_log().parent / "qemu.pid").read_text().strip())
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1] != "Z"
        except (OSError, ValueError, IndexError):
            return False

    def wait_up(self) -> None:
        self.run(["vm", "wait", VM, "--timeout", str(int(BOOT_TIMEOUT))])
        self.follow()

    def stats(self, step: str) -> None:
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=10) as resp:
            now = json.loads(resp.read())
        files, size = now["files"] - self.served["files"], now["bytes"] - self.served["bytes"]
        self.served = {"files": now["files"], "bytes": now["bytes"]}
        self.say(f"  [cyan]server:[/] {step}: {files:,} files requested, {size:,} bytes")


def _serve(act: _Act) -> None:
    argv = ["repo", "serve", "--repo", str(act.repo), "--bind", "127.0.0.1", "--port",
            str(act.port)]
    act.console.print(f"  [dim]$[/] atomicedge {' '.join(argv)} &", markup=True,
                      highlight=False)
    with open(act.workdir / "serve.log", "wb") as log:
        act.server = subprocess.Popen([ATOMICEDGE, *argv], stdout=log,
                                      stderr=subprocess.STDOUT, env=act.env)
    deadline = time.monotonic() + 60
    while True:
        try:
            act.stats("started")
            return
        except OSError:
            if time.monotonic() > deadline or act.server.poll() is not None:
                raise ToolError("repo serve did not start", stderr=(
                    act.workdir / "serve.log").read_text()[-2000:]) from None
            time.sleep(0.2)


def _commit_of(proc: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"^commit ([0-9a-f]{64})$", proc.stdout, re.M)
    if m is None:
        raise ToolError("compose build printed no commit", stderr=proc.stderr[-2000:])
    return m.group(1)


def _booted(act: _Act) -> str:
    st = json.loads(act.guest("atomicedge device status --json", show=False).stdout)
    return str(next(d["checksum"] for d in st["deployments"] if d["booted"]))


def _v1(act: _Act) -> str:
    act.say("[bold]build:[/] gateway v1 as a qcow2 disk that updates from the host's server")
    v1 = _commit_of(act.run(
        ["compose", "build", str(EXAMPLES / "gateway-v1.toml"), "--repo", str(act.repo),
         "--ref", REF, "--parent", "none", "--type", "qcow2", "--output", str(act.disk),
         "--update-url", f"http://10.0.2.2:{act.port}", "--vm-agent", "--dhcp"],
        timeout=COMPOSE_TIMEOUT))
    act.run(["repo", "summary", "-u", "--repo", str(act.repo)])
    _serve(act)
    act.say(f"[bold]server:[/] publishes v1 {v1[:12]} on {REF}")
    act.run(["vm", "run", str(act.disk), "--name", VM, "--detach"])
    start = time.monotonic()
    act.wait_up()
    act.say(f"[bold]device:[/] v1 booted in {time.monotonic() - start:.0f} s (QEMU start -> "
            "command channel answers)")
    act.run(["vm", "exec", VM, "--", "systemctl", "is-system-running", "--wait"], check=False)
    act.guest("atomicedge device status")
    act.guest("cat /etc/greenboot/orig.txt; cat /etc/machine-id")
    return v1


def _v2(act: _Act, v1: str) -> str:
    act.say("[bold]build:[/] gateway v2 (+strace) onto the served ref, v1 as its parent")
    v2 = _commit_of(act.run(["compose", "build", str(EXAMPLES / "gateway-v2.toml"), "--repo",
                             str(act.repo), "--ref", REF, "--parent", v1],
                            timeout=COMPOSE_TIMEOUT))
    act.run(["repo", "summary", "-u", "--repo", str(act.repo)])
    act.say(f"[bold]server:[/] publishes v2 {v2[:12]}")
    return v2


def _bad_update(act: _Act, v1: str, v2: str) -> dict[str, Any]:
    act.say("[bold]device:[/] stages v2 over HTTP and reboots into it; the seed's check "
            "fails on v2 ...")
    act.guest("atomicedge device upgrade")
    act.stats("the update's download")
    act.guest("systemctl --no-block reboot", check=False)
    start = time.monotonic()
    act.wait_console(r"atomicedge-grub: booting entry 1", FALLBACK_TIMEOUT)
    act.say("[yellow]GRUB: the counter ran out, the previous entry (v1) boots[/]")
    act.wait_up()
    act.run(["vm", "exec", VM, "--", "systemctl", "is-system-running", "--wait"], check=False)
    seconds = time.monotonic() - start
    act.say(f"[bold]device:[/] back on the old OS {seconds:.0f} s after the reboot into "
            "the update")
    act.guest("atomicedge device status")
    act.guest("journalctl -b -o cat --no-pager | grep -m1 'FALLBACK BOOT DETECTED'")
    act.guest("cat /etc/machine-id")     # the same id as on the first boot
    strace = act.guest("which strace", check=False).returncode
    return {"fallback_seconds": round(seconds, 1), "fallback_booted": _booted(act) == v1,
            "fallback_strace_absent": strace != 0}


def _good_update(act: _Act, v2: str) -> dict[str, Any]:
    act.say("[bold]device:[/] second attempt: remove orig.txt, stage v2 again, reboot")
    act.guest("rm -f /etc/greenboot/orig.txt && atomicedge device upgrade")
    act.stats("second attempt (content already on the device)")
    act.guest("systemctl --no-block reboot", check=False)
    act.wait_console(r"atomicedge-grub: booting entry 0", BOOT_TIMEOUT)
    act.wait_up()
    act.run(["vm", "exec", VM, "--", "systemctl", "is-system-running", "--wait"], check=False)
    # the image has no grub-editenv (the device writes grubenv itself): its variables
    act.guest("atomicedge device status; grep -a = /boot/grub/grubenv")
    strace = act.guest("which strace", check=False).returncode
    return {"final_booted_v2": _booted(act) == v2, "final_strace": strace == 0}


def _stop(act: _Act) -> None:
    subprocess.run([ATOMICEDGE, "vm", "kill", VM], env=act.env, capture_output=True,
                   timeout=120)
    if act.server is not None:
        act.server.terminate()
        try:
            act.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            act.server.kill()
            act.server.wait(timeout=30)


def run(workdir: Path, console: Any) -> dict[str, Any]:
    """Returns figures for the summary (commits, seconds, what the device showed)."""
    t0 = time.monotonic()
    act = _Act(workdir, console)
    # a TERM (timeout, Ctrl-C of make) must still stop QEMU and the server: finally runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        v1 = _v1(act)
        v2 = _v2(act, v1)
        out = _bad_update(act, v1, v2)
        out.update(_good_update(act, v2))
    finally:
        _stop(act)
    out.update(v1=v1, v2=v2, seconds=round(time.monotonic() - t0, 1))
    return out
