"""``atomicedge demo --real`` (``make demo-real``): the parts that run without a VM.

The act itself boots QEMU five to seven times (minutes under TCG); tests/vm/test_vm_gateway.py
proves the same update story with assertions. Here: the act reads the story from the serial
console exactly as QEMU writes it (GRUB's lines, systemd's colour codes, journal prefixes of the
health services), and it refuses a compose that printed no commit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from atomicedge.errors import ToolError
from atomicedge.lab import demo_real

CONSOLE = (
    b"\x1b[2J\x1b[01;01Hatomicedge-grub: boot_counter=0 default=0\r\n"
    b"atomicedge-grub: booting entry 0: gateway 1.1.0 (ostree:0)\r\n"
    b"[  OK  ] Started \x1b[0;1;39msystemd-journald.service\x1b[0m - Journal Service.\r\n"
    b"[   41.2] atomicedge[612]: orig.txt (abc) != current.txt (def)\r\n"
    b"[   41.9] atomicedge[612]: Boot Status is RED - Health Check FAILURE!\r\n"
    b"atomicedge-grub: boot_counter=-1 default=1\r\n"
    b"atomicedge-grub: booting entry 1: gateway 1.0.0 (ostree:1)\r\n"
    b"[   52.0] atomicedge[700]: FALLBACK BOOT DETECTED! Default deployment has been rolled"
    b" back.\r\n"
    b"half a line without its end")


def test_the_act_prints_the_console_story_and_waits_for_the_fallback_entry(
        tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    act = demo_real._Act(tmp_path, console)
    log = act.console_log()
    log.parent.mkdir(parents=True)
    log.write_bytes(CONSOLE)
    act.wait_console(r"atomicedge-grub: booting entry 1", timeout=5)
    shown = [line.strip() for line in console.export_text().splitlines()]
    assert shown == [
        "atomicedge-grub: boot_counter=0 default=0",
        "atomicedge-grub: booting entry 0: gateway 1.1.0 (ostree:0)",
        "orig.txt (abc) != current.txt (def)",
        "Boot Status is RED - Health Check FAILURE!",
        "atomicedge-grub: boot_counter=-1 default=1",
        "atomicedge-grub: booting entry 1: gateway 1.0.0 (ostree:1)",
        "FALLBACK BOOT DETECTED! Default deployment has been rolled back."]
    with open(log, "ab") as f:                      # the unfinished line is printed once done
        f.write(b" and its end\r\n")
    act.follow()
    assert console.export_text().strip() == ""     # not a story line: nothing printed
    with pytest.raises(ToolError, match="did not show"):
        act.wait_console(r"booting entry 1", timeout=0)  # only new output counts


def test_a_compose_that_printed_no_commit_stops_the_act() -> None:
    ok = subprocess.CompletedProcess(["atomicedge"], 0, "commit " + "a" * 64 + "\n", "")
    assert demo_real._commit_of(ok) == "a" * 64
    with pytest.raises(ToolError, match="no commit"):
        demo_real._commit_of(subprocess.CompletedProcess(["atomicedge"], 0, "", "boom"))


def test_demo_offers_the_real_act() -> None:
    proc = subprocess.run([sys.executable, "-m", "atomicedge.cli.main", "demo", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--real" in proc.stdout
    make = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "demo-real:" in make and "atomicedge demo --real" in make
