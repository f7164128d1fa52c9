"""Pure parts: grubenv codec (judged by real grub-editenv), BLS/origin codecs, and the
decision state machines (bootloader counter, boot decision, agent) exhaustively."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
from pathlib import Path

import pytest

from atomicedge.device import bls, grubenv
from atomicedge.device.decision import (
    Action,
    AgentFacts,
    BootFacts,
    Health,
    HealthResult,
    decide_agent,
    decide_boot,
    grub_step,
    parse_window,
)
from atomicedge.device.origin import Origin
from atomicedge.errors import CorruptionError, FormatError

NOW = dt.datetime(2026, 11, 21, 3, 30, tzinfo=dt.UTC)  # a Saturday


def _editenv(path: Path, *args: str) -> str:
    return subprocess.run(["grub-editenv", str(path), *args], capture_output=True,
                          text=True, check=True).stdout


def test_grubenv_written_by_us_is_listed_by_grub_editenv(tmp_path: Path) -> None:
    f = tmp_path / "grubenv"
    env = {"boot_counter": "3", "boot_success": "0", "odd": "a\\b"}
    grubenv.GrubEnv(f).write(env)
    assert len(f.read_bytes()) == 1024
    assert _editenv(f, "list").splitlines() == ["boot_counter=3", "boot_success=0", "odd=a\\b"]


def test_grubenv_written_by_grub_editenv_is_read_by_us(tmp_path: Path) -> None:
    f = tmp_path / "grubenv"
    _editenv(f, "create")
    _editenv(f, "set", "boot_counter=2", "boot_success=1", "saved_entry=x y")
    assert grubenv.GrubEnv(f).read() == {"boot_counter": "2", "boot_success": "1",
                                         "saved_entry": "x y"}
    grubenv.GrubEnv(f).update({"boot_success": "0"}, unset=("boot_counter",))
    assert _editenv(f, "list").splitlines() == ["boot_success=0", "saved_entry=x y"]


# each step: grub-editenv's arguments, and the same change through GrubEnv.update
EDIT_STEPS: list[tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]] = [
    (("set", "boot_counter=3", "boot_success=0"), {"boot_counter": "3", "boot_success": "0"},
     ()),
    (("set", "saved_entry=Debian GNU/Linux, with 6.1"),
     {"saved_entry": "Debian GNU/Linux, with 6.1"}, ()),
    (("set", "boot_counter=2"), {"boot_counter": "2"}, ()),           # in place, not appended
    (("set", "odd=back\\slash\nnew line"), {"odd": "back\\slash\nnew line"}, ()),
    (("unset", "boot_counter"), {}, ("boot_counter",)),
    (("set", "boot_success=1"), {"boot_success": "1"}, ()),
    (("unset", "odd", "saved_entry"), {}, ("odd", "saved_entry")),
]


def test_grubenv_bytes_equal_grub_editenv_create_set_unset(tmp_path: Path) -> None:
    """Byte-for-byte, after every step: what grub-editenv writes is what we write."""
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    _editenv(theirs, "create")
    grubenv.GrubEnv(ours).write({})
    assert ours.read_bytes() == theirs.read_bytes()
    for args, set_, unset in EDIT_STEPS:
        _editenv(theirs, *args)
        grubenv.GrubEnv(ours).update(set_, unset)
        assert ours.read_bytes() == theirs.read_bytes(), args


def test_grub_editenv_edits_our_file_and_we_edit_theirs_to_the_same_bytes(
        tmp_path: Path) -> None:
    """Both directions, alternating: each tool edits the file the other one wrote."""
    f, ref = tmp_path / "grubenv", tmp_path / "reference"
    grubenv.GrubEnv(f).write({})
    _editenv(ref, "create")
    for i, (args, set_, unset) in enumerate(EDIT_STEPS):
        if i % 2:
            _editenv(f, *args)                     # grub-editenv edits the file we wrote
        else:
            grubenv.GrubEnv(f).update(set_, unset)  # we edit the file grub-editenv wrote
        _editenv(ref, *args)
        assert f.read_bytes() == ref.read_bytes(), args
        listed = _editenv(f, "list")
        assert grubenv.GrubEnv(f).read() == grubenv.decode(ref.read_bytes())
        assert listed == _editenv(ref, "list")


@pytest.mark.parametrize("data", [b"", b"# GRUB Environment Block\n" + b"#" * 10,
                                  b"garbage" + b"#" * 1017,
                                  b"# GRUB Environment Block\nnoequals\n" + b"#" * 989])
def test_corrupt_grubenv_is_refused(data: bytes) -> None:
    with pytest.raises(CorruptionError):
        grubenv.decode(data)


def test_grubenv_that_does_not_fit_is_refused() -> None:
    with pytest.raises(Exception, match="1024"):
        grubenv.encode({"big": "x" * 1100})


def test_bls_entry_round_trips_and_sorts_by_version(tmp_path: Path) -> None:
    e = bls.BootEntry("Test 2 (ostree:0)", 2, ["rw", "ostree=/ostree/boot.0/os/" + "a" * 64
                                               + "/0"], "/ostree/os-x/vmlinuz-k", "/i.img")
    parsed = bls.parse(e.encode())
    assert parsed.encode() == e.encode() and parsed.kargs() == ["rw"]
    (tmp_path / "ostree-1-os.conf").write_text(e.encode().replace("version 2", "version 1"))
    (tmp_path / "ostree-2-os.conf").write_text(e.encode())
    assert [x.version for x in bls.read_entries(tmp_path)] == [2, 1]


def test_origin_without_refspec_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="refspec"):
        Origin.parse("[origin]\nfoo=bar\n")
    o = Origin.parse("[origin]\nrefspec=r:a/b\n[packages]\nrequested=x\n")
    assert (o.remote, o.ref) == ("r", "a/b")
    assert "[packages]" in o.with_override("c" * 64).dump()  # unknown groups preserved


# --- bootloader counter: every counter value x success flag x entry count -------------------

@pytest.mark.parametrize(("counter", "success", "n"), list(itertools.product(
    [None, "-1", "0", "1", "2", "3", "5", "junk"], [None, "0", "1"], [1, 2, 3])))
def test_grub_step_follows_greenboot_script(counter: str | None, success: str | None,
                                            n: int) -> None:
    env = {k: v for k, v in (("boot_counter", counter), ("boot_success", success)) if v}
    step = grub_step(env, n)
    assert step.env["boot_success"] == "0"  # reset on every boot
    if counter is None or success != "0":
        assert step.entry == 0 and step.env.get("boot_counter") == counter
        return
    if counter in ("-1", "0", "junk"):
        assert step.env["boot_counter"] == "-1" and step.entry == (1 if n > 1 else 0)
    else:
        assert step.env["boot_counter"] == str(int(counter) - 1) and step.entry == 0


def test_three_attempts_then_fallback() -> None:
    env = {"boot_counter": "3", "boot_success": "0"}
    entries = []
    for _ in range(4):
        step = grub_step(env, 2)
        entries.append(step.entry)
        env = step.env  # every boot fails: nobody sets boot_success=1
    assert entries == [0, 0, 0, 1]


# --- boot decision ---------------------------------------------------------------------------

GREEN = HealthResult()
RED = HealthResult(required_failed=("01.sh",))
WANTED = HealthResult(wanted_failed=("w.sh",))
HUNG = HealthResult(required_failed=("hang.sh",), timed_out=("hang.sh",))


@pytest.mark.parametrize(("counter", "idx", "n", "health"), list(itertools.product(
    [None, -1, 0, 1, 2], [0, 1], [1, 2, 3], [GREEN, RED, WANTED, HUNG])))
def test_boot_decision_table(counter: int | None, idx: int, n: int,
                             health: HealthResult) -> None:
    if idx >= n:  # a booted deployment outside the list: refused, never decided on
        with pytest.raises(ValueError, match="booted index"):
            BootFacts(counter, idx, n, "b" * 64, "d" * 64)
        return
    facts = BootFacts(counter, idx, n, "b" * 64, "d" * 64)
    d = decide_boot(facts, health, NOW)
    fallback = counter == -1 and idx > 0
    assert d.fallback == fallback and d.rollback == fallback
    assert (d.denylist == "d" * 64) == fallback
    if health.status is Health.GREEN:
        assert d.grubenv_set == {"boot_success": "1"} and "boot_counter" in d.grubenv_unset
        assert not d.reboot and d.run_green
    else:
        assert not d.grubenv_set and d.run_red
        # reboot only while an update is on trial and there is something to fall back to
        assert d.reboot == (counter is not None and counter >= 0 and n > 1)
        if counter == -1:
            assert any("still UNHEALTHY" in m for m in d.messages)
    if fallback:
        assert any("FALLBACK BOOT DETECTED" in m for m in d.messages)
    if health.status is Health.GREEN and not fallback:
        assert not any("FALLBACK" in m for m in d.messages)
    assert "Boot Status is" in d.motd


def test_failing_wanted_check_does_not_roll_back() -> None:
    d = decide_boot(BootFacts(2, 0, 2), WANTED, NOW)
    assert d.health is Health.GREEN and not d.reboot and not d.rollback


def test_hung_required_check_counts_as_failed() -> None:
    d = decide_boot(BootFacts(2, 0, 2), HUNG, NOW)
    assert d.health is Health.RED and d.reboot
    assert "timed out: hang.sh" in d.motd


# --- agent -----------------------------------------------------------------------------------

A, B = "a" * 64, "b" * 64
SAT_WINDOW = parse_window(["Sat"], "03:00", 60)


@pytest.mark.parametrize(("policy", "avail", "staged", "deny", "confirmed", "window"),
                         list(itertools.product(["none", "check", "stage", "apply"],
                                                [None, A, B], [None, B], [False, True],
                                                [False, True], [None, "in", "out"])))
def test_agent_decision_table(policy: str, avail: str | None, staged: str | None, deny: bool,
                              confirmed: bool, window: str | None) -> None:
    win = {None: None, "in": SAT_WINDOW, "out": parse_window(["Mon"], "03:00", 60)}[window]
    facts = AgentFacts(policy, A, avail, staged, frozenset({B}) if deny else frozenset(),
                       confirmed, win)
    d = decide_agent(facts, NOW)
    new = avail is not None and avail != A
    if policy == "none" or not confirmed or not new or (deny and avail == B):
        assert d.action is Action.NOTHING
        return
    if policy == "check":
        assert d.action is Action.REPORT
    elif policy == "stage":
        assert d.action is (Action.NOTHING if staged == avail else Action.STAGE)
    elif window == "out":
        assert d.action is (Action.WAIT if staged == avail else Action.STAGE)
    else:
        assert d.action is Action.APPLY


def test_window_wraps_over_the_week_end() -> None:
    w = parse_window(["Sun"], "23:30", 60)
    assert w.contains(dt.datetime(2026, 11, 23, 0, 15, tzinfo=dt.UTC))  # Monday 00:15
    assert not w.contains(dt.datetime(2026, 11, 23, 0, 45, tzinfo=dt.UTC))
    with pytest.raises(ValueError):
        parse_window(["Someday"], "03:00", 10)


def test_bootloader_boots_the_default_when_grubenv_is_corrupt(tmp_path: Path) -> None:
    from devhelpers import commit_tiny

    from atomicedge.device import deploy as dp
    from atomicedge.device import sysroot as sr
    from atomicedge.device.origin import Origin
    from atomicedge.lab import bootloader
    s = sr.init_fs(tmp_path / "s")
    sr.os_init(s, "testos")
    v1 = commit_tiny(s.repo, tmp_path, "1")
    dp.deploy(s, "testos", v1, Origin.new("testos/stable"))
    v2 = commit_tiny(s.repo, tmp_path, "2")
    dp.deploy(s, "testos", v2, Origin.new("testos/stable"), arm_counter=True)
    assert bootloader.select(s).deployment_dir.name.startswith(v2)  # 3 -> 2
    assert grubenv.GrubEnv(s.grubenv_path).read()["boot_counter"] == "2"
    s.grubenv_path.write_bytes(b"garbage")
    choice = bootloader.select(s)
    assert choice.index == 0 and choice.deployment_dir.name.startswith(v2)
    assert s.grubenv_path.read_bytes() == b"garbage"  # GRUB does not rewrite what it can't read
