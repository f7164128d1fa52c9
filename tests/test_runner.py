"""The one outside-tool runner: timeouts that kill the whole tool, stderr kept, every call site.

The tools run here are real (sh, sleep, gpg); where a tool must misbehave on purpose (a gpg
that hangs) a small stand-in script named like it is put first on PATH, because the real one
cannot be made to hang on demand.
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest

from atomicedge import runner
from atomicedge.errors import ToolError
from atomicedge.trust import gpg

SRC = Path(__file__).resolve().parents[1] / "src" / "atomicedge"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # killed; waiting for its new parent to reap it


def test_a_hung_tool_and_its_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"echo starting up >&2; sleep 300 & echo $! > {pidfile}; wait"
    with pytest.raises(ToolError) as info:
        runner.run(["sh", "-c", script], what="hanging tool", timeout=1)
    err = info.value
    assert "hanging tool" in err.message and "sh did not finish within 1 s" in err.message
    assert "starting up" in err.stderr  # what the tool said before it hung is kept
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 60
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), "the tool's background child survived the timeout"


def test_a_failing_tool_keeps_its_whole_stderr_and_names_itself() -> None:
    script = "for i in $(seq 1 30); do echo line-$i >&2; done; exit 3"
    with pytest.raises(ToolError) as info:
        runner.run(["sh", "-c", script], what="noisy tool")
    assert info.value.message.startswith("noisy tool failed (exit 3): ")
    assert "line-30" in info.value.message
    assert info.value.stderr.splitlines() == [f"line-{i}" for i in range(1, 31)]


def test_a_tool_that_finishes_in_time_returns_its_output() -> None:
    out = runner.run(["sh", "-c", "cat; echo err >&2"], what="cat", input_text="hello\n",
                     timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "hello\n", "err\n")
    raw = runner.run_bytes(["cat"], what="cat", data=b"\x00\xff", timeout=60)
    assert raw.stdout == b"\x00\xff"


def test_a_missing_tool_is_a_tool_error_with_a_hint() -> None:
    with pytest.raises(ToolError, match="no-such-tool-xyz is not installed") as info:
        runner.run(["no-such-tool-xyz"], what="frobnicate")
    assert info.value.hint


def test_gpg_calls_are_bounded_by_the_runner_timeout(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "gpg"  # stand-in: the real gpg cannot be made to hang
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'gpg: waiting for the card' >&2\nexec sleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(gpg, "GPG_TIMEOUT", 1.0)
    with pytest.raises(ToolError, match="gpg did not finish within 1 s") as info:
        gpg.export_keys(tmp_path, ["0" * 40])
    assert "waiting for the card" in info.value.stderr


# direct process launches allowed outside the runner, and why
ALLOWED = {
    "runner.py": "the runner itself",
    "health/greenboot.py": "runs the user's check scripts (own timeout, kills the group)",
    "composer/worker.py": "supervises its own Python build process (streamed events, own "
                          "kill policy), not an outside tool",
}
# (os.exec* is not listed: it hands the terminal to an interactive program for good -
# nothing to time out or capture)
LAUNCHERS = {("subprocess", n) for n in ("run", "Popen", "call", "check_call", "check_output",
                                         "getoutput", "getstatusoutput")} | {
    ("os", n) for n in ("system", "popen", "spawnv", "spawnvp", "spawnve", "posix_spawn",
                        "posix_spawnp")}


def test_product_code_reaches_outside_tools_only_through_the_runner() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        # lab/ is the test harness and demos (nspawn is being rewritten elsewhere)
        if rel in ALLOWED or rel.startswith("lab/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in LAUNCHERS):
                offenders.append(f"{rel}:{node.lineno} {node.func.value.id}.{node.func.attr}")
    assert offenders == []
