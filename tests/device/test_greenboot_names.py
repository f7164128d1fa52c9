"""greenboot's names: the health units answer to greenboot's unit names and
``boot-complete.target`` is reached only on a green boot, so greenboot-aware units work.

The lab test tree (``atomicedge.lab.testtree``) gets greenboot-aware units the way a user
would write them for greenboot: a plain-unit required check (``Before=`` and
``RequiredBy=boot-complete.target``, ``OnFailure=redboot.target``), a unit that must run only
after a green boot (``Requires=``/``After=boot-complete.target``), one ``WantedBy=redboot.target``,
and green.d/red.d scripts.  The units are checked with real ``systemd-analyze verify`` against
the tree, then the tree boots under systemd-nspawn (real systemd as PID 1) three times: green,
red by a required check script, red by the plain-unit check.  A unit inside the image records
what systemd says about each unit just before multi-user.target.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from atomicedge.device import deploy as dp
from atomicedge.device import sysroot as sr
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.image import GREENBOOT_UNITS
from atomicedge.device.origin import Origin
from atomicedge.lab import nspawn, testtree
from atomicedge.ostree.commit import commit_directory

pytestmark = pytest.mark.slow
OS, REF = "edge", "edge/stable"
LAB = "/var/lib/atomicedge-lab"
UNITS = ("boot-complete.target", "redboot.target", "greenboot-healthcheck.service",
         "greenboot-grub2-set-success.service", "greenboot-task-runner.service",
         "redboot-task-runner.service", "redboot-auto-reboot.service",
         "greenboot-status.service", "lab-unit-check.service", "lab-after-green.service",
         "lab-on-red.service")

SYSD = "usr/lib/systemd/system"
EXTRA: dict[str, tuple[str, int]] = {
    # a required check script that fails while the host has left the flag file
    "usr/etc/greenboot/check/required.d/50_lab_flag.sh":
        (f"#!/bin/sh\n[ ! -e {LAB}/red-script ]\n", 0o755),
    "usr/etc/greenboot/green.d/50_lab.sh": (f"#!/bin/sh\necho green >> {LAB}/hooks.log\n", 0o755),
    "usr/etc/greenboot/red.d/50_lab.sh": (f"#!/bin/sh\necho red >> {LAB}/hooks.log\n", 0o755),
    # greenboot-aware units, written for greenboot
    f"{SYSD}/lab-unit-check.service": (f"""[Unit]
Description=lab: a required health check as a plain unit
Before=boot-complete.target
OnFailure=redboot.target
OnFailureJobMode=fail

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'test ! -e {LAB}/red-unit'

[Install]
RequiredBy=boot-complete.target
""", 0o644),
    f"{SYSD}/lab-after-green.service": ("""[Unit]
Description=lab: runs only once the boot is green
Requires=boot-complete.target
After=boot-complete.target greenboot-healthcheck.service greenboot-grub2-set-success.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
""", 0o644),
    f"{SYSD}/lab-on-red.service": ("""[Unit]
Description=lab: runs on a red boot
After=redboot-task-runner.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=redboot.target
""", 0o644),
    f"{SYSD}/lab-greenboot-record.service": (f"""[Unit]
Description=lab: record the state of the greenboot units of this boot
After=greenboot-status.service greenboot-task-runner.service greenboot-grub2-set-success.service
After=redboot-task-runner.service redboot-auto-reboot.service lab-after-green.service
After=lab-on-red.service atomicedge-healthcheck.service
ConditionPathExists=/run/ostree-booted

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'f={LAB}/record-$$(cat {LAB}/label); \\
for u in {" ".join(UNITS)}; do echo "$$u $$(systemctl is-active $$u)"; done > $$f; \\
for a in greenboot-healthcheck.service greenboot-grub2-set-counter.service; do \\
echo "$$a=$$(systemctl show -p Id --value $$a)"; done >> $$f; \\
cp /run/motd.d/boot-status $$f.motd'

[Install]
WantedBy=multi-user.target
""", 0o644),
}
LINKS = {"boot-complete.target.requires/lab-unit-check.service": "../lab-unit-check.service",
         "multi-user.target.wants/lab-after-green.service": "../lab-after-green.service",
         "multi-user.target.wants/lab-greenboot-record.service":
             "../lab-greenboot-record.service",
         "redboot.target.wants/lab-on-red.service": "../lab-on-red.service"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    w = tmp_path_factory.mktemp("greenboot")
    tree = testtree.lab_tree(w, "1.0", files=EXTRA)
    for rel, target in LINKS.items():
        (tree / SYSD / rel).parent.mkdir(exist_ok=True)
        (tree / SYSD / rel).symlink_to(target)
    units = [f"{SYSD}/{u}" for u in ("atomicedge-healthcheck.service",
                                     "greenboot-healthcheck.service",
                                     "atomicedge-finalize-staged.service",
                                     "greenboot-grub2-set-counter.service", *GREENBOOT_UNITS,
                                     "lab-unit-check.service", "lab-after-green.service",
                                     "lab-on-red.service")]
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={tree}", "--man=no", *units,
                             f"{SYSD}/multi-user.target", f"{SYSD}/boot-complete.target"],
                            capture_output=True, text=True, cwd=tree)
    sysroot = sr.init_fs(w / "sysroot")
    sr.os_init(sysroot, OS)
    csum = commit_directory(sysroot.repo, tree, branch=REF, subject="lab 1.0")
    dp.deploy(sysroot, OS, csum, Origin.new(REF), ["rw"])
    GrubEnv(sysroot.grubenv_path).write({})
    var = sysroot.stateroot(OS) / "var" / "lib" / "atomicedge-lab"
    var.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"verify": verify, "tree": tree, "boots": {}}
    for label, flag in (("green", None), ("red-script", "red-script"),
                        ("red-unit", "red-unit")):
        for f in ("red-script", "red-unit"):
            (var / f).unlink(missing_ok=True)
        if flag:
            (var / flag).write_text("")
        (var / "label").write_text(label)
        (var / "hooks.log").write_text("")
        run = nspawn.run(sysroot, 1, 240.0)
        res["boots"][label] = {
            "units": _record(var / f"record-{label}"),
            "motd": (var / f"record-{label}.motd").read_text(),
            "hooks": (var / "hooks.log").read_text().split(),
            "grubenv": GrubEnv(sysroot.grubenv_path).read(),
            "rc": run.boots[-1].rc, "console": run.console}
    return res


def _record(path: Path) -> dict[str, str]:
    """``unit state`` lines, and ``alias=unit`` lines (keyed ``alias=``)."""
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            out[key + "="] = value
        else:
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_units_and_greenboot_aware_units_pass_systemd_analyze_verify(
        lab: dict[str, Any]) -> None:
    verify = lab["verify"]
    assert verify.returncode == 0, verify.stderr
    assert "cycle" not in verify.stderr and "not executable" not in verify.stderr
    sysd = lab["tree"] / SYSD
    assert (sysd / "greenboot-healthcheck.service").readlink() == \
        Path("atomicedge-healthcheck.service")
    assert (sysd / "boot-complete.target.requires/atomicedge-healthcheck.service").is_symlink()
    assert (sysd / "redboot.target.requires/redboot-task-runner.service").is_symlink()
    assert (sysd / "redboot.target.wants/redboot-auto-reboot.service").is_symlink()


def test_greenboot_names_resolve_to_our_units_on_the_booted_device(lab: dict[str, Any]) -> None:
    units = lab["boots"]["green"]["units"]
    assert units["greenboot-healthcheck.service="] == "atomicedge-healthcheck.service"
    assert units["greenboot-grub2-set-counter.service="] == "atomicedge-finalize-staged.service"


def test_green_boot_reaches_boot_complete_and_runs_the_green_path_only(
        lab: dict[str, Any]) -> None:
    boot = lab["boots"]["green"]
    u = boot["units"]
    assert u["boot-complete.target"] == "active"
    assert u["greenboot-healthcheck.service"] == "active"
    assert u["greenboot-grub2-set-success.service"] == "active"
    assert u["greenboot-task-runner.service"] == "active"
    assert u["lab-after-green.service"] == "active"
    assert u["greenboot-status.service"] == "active"
    assert u["redboot.target"] == "inactive"
    assert u["redboot-task-runner.service"] == "inactive"
    assert u["lab-on-red.service"] == "inactive"
    assert boot["hooks"] == ["green"]
    assert boot["grubenv"].get("boot_success") == "1"
    assert "Boot Status is GREEN" in boot["motd"]
    assert boot["rc"] == 0


def test_red_check_script_fails_the_check_and_boot_complete_is_not_reached(
        lab: dict[str, Any]) -> None:
    boot = lab["boots"]["red-script"]
    u = boot["units"]
    assert u["greenboot-healthcheck.service"] == "failed"
    assert u["boot-complete.target"] != "active"
    assert u["greenboot-grub2-set-success.service"] != "active"
    assert u["greenboot-task-runner.service"] != "active"
    assert u["lab-after-green.service"] != "active"
    assert u["redboot.target"] == "active"
    assert u["redboot-task-runner.service"] == "active"
    assert u["lab-on-red.service"] == "active"
    # no update on trial (boot_counter unset): the auto reboot refuses, as greenboot's does
    assert u["redboot-auto-reboot.service"] == "failed"
    assert "Manual intervention necessary" in boot["console"]
    assert boot["hooks"] == ["red"]
    assert boot["grubenv"].get("boot_success") == "0"
    assert "Boot Status is RED" in boot["motd"]


def test_a_failing_greenboot_aware_plain_unit_check_makes_the_boot_red(
        lab: dict[str, Any]) -> None:
    boot = lab["boots"]["red-unit"]
    u = boot["units"]
    assert u["greenboot-healthcheck.service"] == "active"   # the scripts passed ...
    assert u["lab-unit-check.service"] == "failed"          # ... but a required unit did not
    assert u["boot-complete.target"] != "active"
    assert u["greenboot-grub2-set-success.service"] != "active"
    assert u["lab-after-green.service"] != "active"
    assert u["redboot.target"] == "active" and u["lab-on-red.service"] == "active"
    assert boot["hooks"] == ["red"]
    assert boot["grubenv"].get("boot_success") == "0"
    assert "Boot Status is RED" in boot["motd"]
