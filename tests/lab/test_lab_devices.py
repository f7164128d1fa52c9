"""Composed gateway images as lab devices: installed over HTTP from ``repo serve``, booted with
``lab up`` on the lab network, updated by their own timers.

One story per module, two devices at once (both installed from the served v1):
* edge1 keeps the seed's ``orig.txt`` check armed: v2 boots red three times, GRUB falls back,
  v1 is the default again and v2 is denylisted;
* edge2 had ``/etc/greenboot/orig.txt`` removed first (the seed's way to allow an upgrade):
  its timers stage v2, the apply timer reboots into it, it boots green with strace.
Each test asserts one behaviour of that story.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.sysroot import Sysroot
from atomicedge.lab.devices import Lab
from tests.lab.helpers import Served, copy_sysroot, remove_sysroot, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
WEB = ("systemd-run", "--unit=lab-web", "--property=Type=exec", "/usr/bin/python3", "-m",
       "http.server", "8080", "--directory", "/etc")
EDGE2_IP = "10.213.0.42"


def sh(lab: Lab, name: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return lab.run(name, ["/bin/sh", "-c", script], timeout=timeout)


def out(lab: Lab, name: str, script: str) -> str:
    proc = sh(lab, name, script)
    assert proc.returncode == 0, f"{name}: {script}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def status(lab: Lab, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out(lab, name, "atomicedge device status --json"))
    return data


def agent_state(sysroot: Path) -> dict[str, Any]:
    path = sysroot / "ostree/deploy/edge/var/lib/atomicedge/agent-state.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _reach(lab: Lab, src: str, url: str) -> str:
    # the other side's server may still be starting: retry refused connections for a while
    return sh(lab, src, "curl -s -o /dev/null -w '%{http_code}' --max-time 10 --retry 30 "
              f"--retry-delay 1 --retry-connrefused {url}").stdout


def _connectivity(lab: Lab, served: Served) -> dict[str, str]:
    for name in ("edge1", "edge2"):
        out(lab, name, " ".join(WEB))
    ips = {n: lab.ip(n) for n in ("edge1", "edge2")}
    return {"edge1->server": _reach(lab, "edge1", f"{served.url}/config"),
            "edge2->server": _reach(lab, "edge2", f"{served.url}/config"),
            "edge1->edge2": _reach(lab, "edge1", f"http://{ips['edge2']}:8080/"),
            "edge2->edge1": _reach(lab, "edge2", f"http://{ips['edge1']}:8080/")}


def _first_boot_facts(lab: Lab, sysroot: Path) -> dict[str, Any]:
    return {
        "status": status(lab, "edge1"),
        "usr_write": sh(lab, "edge1", "touch /usr/lab-write-test"),
        "usr_options": out(lab, "edge1", "findmnt -no OPTIONS /usr").strip(),
        "var_marker": (out(lab, "edge1", "echo from-edge1 > /var/lib/lab-marker && echo ok"),
                       (sysroot / "ostree/deploy/edge/var/lib/lab-marker").read_text()),
        "mounts": out(lab, "edge1", "cat /proc/self/mountinfo"),
        "passwd": out(lab, "edge1", "getent passwd core").strip(),
        "group": out(lab, "edge1", "getent group operators").strip(),
        "groups_of_core": out(lab, "edge1", "id -nG core").split(),
        "stat": out(lab, "edge1", "stat -c '%n %U %G %a' /etc/gateway /etc/gateway/app.conf"
                    ).splitlines(),
        "units": sh(lab, "edge1", "systemctl is-active ssh.service firewalld.service"),
        "hostname": out(lab, "edge1", "hostname").strip(),
    }


def _update(lab: Lab, served: Served, images: Any, res: dict[str, Any]) -> None:
    """edge2 is allowed to upgrade (orig.txt removed), edge1 is not; v2 is published."""
    out(lab, "edge2", "rm /etc/greenboot/orig.txt")
    res["stats_before_update"] = served.stats()
    served.publish(images.v2)
    v2 = images.v2

    def edge2_on_v2() -> bool:
        d = lab.device("edge2")
        return d.leader is not None and str(d.state.get("deployment", "")).startswith(v2)
    wait_for("edge2 to boot v2", edge2_on_v2)
    lab.wait("edge2")
    res["edge2_status"] = status(lab, "edge2")
    res["edge2_strace"] = sh(lab, "edge2", "which strace")
    res["edge2_journal_prev"] = out(lab, "edge2", "journalctl -q -b -1 --no-pager -o cat "
                                    "-u atomicedge-agent.service -u atomicedge-apply.service")

    def edge1_fell_back() -> bool:
        d = lab.device("edge1")
        return d.leader is not None and d.state.get("entry") == 1
    wait_for("edge1 to fall back to v1", edge1_fell_back)
    lab.wait("edge1")
    res["stats_after_update"] = served.stats()


def _after_fallback(lab: Lab, sysroot: Path, res: dict[str, Any]) -> None:
    res["edge1_status"] = status(lab, "edge1")
    res["edge1_history"] = lab.device("edge1").state["history"]
    res["edge1_strace"] = sh(lab, "edge1", "which strace")
    res["journal_fallback"] = out(lab, "edge1", "journalctl -q --no-pager -o cat "
                                  "| grep -F 'FALLBACK BOOT DETECTED' || true")
    res["journal_boots"] = out(lab, "edge1", "journalctl --list-boots | tail -n +2").splitlines()
    res["motd"] = out(lab, "edge1", "cat /run/motd.d/boot-status")
    res["timer"] = out(lab, "edge1", "systemctl show atomicedge-agent.timer -p TimersCalendar")
    # two more runs of the agent's timer after the fallback boot settled
    runs: list[str] = []

    def two_more_runs() -> bool:
        last = agent_state(sysroot).get("last-run")
        if last and (not runs or runs[-1] != last):
            runs.append(last)
        return len(runs) >= 3
    wait_for("two agent runs after the fallback", two_more_runs, timeout=120)
    res["agent_after"] = agent_state(sysroot)
    res["edge1_status_later"] = status(lab, "edge1")


def _down(lab: Lab, res: dict[str, Any]) -> None:
    lab.down("edge1")
    lab.down("edge2")
    res["lab_links_after"] = subprocess.run(["ip", "-n", lab.net.netns, "-o", "link"],
                                            capture_output=True, text=True).stdout
    res["netns_after"] = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout
    res["host_links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                             text=True).stdout
    res["ps_after"] = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True,
                                     text=True).stdout


@pytest.fixture(scope="module")
def story(lab: Lab, served: Served, installed: dict[str, Any], gateway_images: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    w = tmp_path_factory.mktemp("story")
    s1 = copy_sysroot(installed["sysroot"], w / "edge1")
    s2 = copy_sysroot(installed["sysroot"], w / "edge2")
    res: dict[str, Any] = {"sysroot1": s1, "sysroot2": s2, "lab": lab,
                           "host_links_before": subprocess.run(
                               ["ip", "-o", "link"], capture_output=True, text=True).stdout}
    served.publish(gateway_images.v1)
    try:
        lab.up("edge1", s1)
        lab.up("edge2", s2, ip=EDGE2_IP)
        lab.wait("edge1")
        lab.wait("edge2")
        res["first"] = _first_boot_facts(lab, s1)
        res["net"] = _connectivity(lab, served)
        res["host_links_during"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                  text=True).stdout
        _update(lab, served, gateway_images, res)
        _after_fallback(lab, s1, res)
        res["grubenv2"] = GrubEnv(Sysroot.open(s2).grubenv_path).read()
        res["grubenv1"] = GrubEnv(Sysroot.open(s1).grubenv_path).read()
    except BaseException:
        _down(lab, res)
        remove_sysroot(s1)
        remove_sysroot(s2)
        raise
    _down(lab, res)
    yield res
    remove_sysroot(s1)
    remove_sysroot(s2)


def test_booted_commit_is_the_composed_one_installed_over_http(
        story: dict[str, Any], gateway_images: Any, served: Served) -> None:
    booted = [d for d in story["first"]["status"]["deployments"] if d["booted"]]
    assert [d["checksum"] for d in booted] == [gateway_images.v1]
    assert booted[0]["origin"] == f"origin:{gateway_images.ref}"
    config = (story["sysroot1"] / "ostree/repo/config").read_text()
    assert f"url={served.url}" in config.replace(" ", "")
    assert story["first"]["hostname"] == "gateway"


def test_usr_is_read_only_var_is_the_staterooots_and_no_host_code_is_mounted(
        story: dict[str, Any]) -> None:
    first = story["first"]
    assert first["usr_write"].returncode != 0
    assert "Read-only file system" in first["usr_write"].stderr
    assert first["usr_options"].split(",")[0] == "ro"
    assert first["var_marker"] == ("ok\n", "from-edge1\n")
    # the image runs its own atomicedge: nothing of the host's checkout or venv is mounted in
    root = str(Path(__file__).resolve().parents[2])
    assert root not in first["mounts"]


def test_blueprint_users_groups_files_and_directories_have_their_owner_group_mode(
        story: dict[str, Any]) -> None:
    first = story["first"]
    assert first["passwd"].split(":")[2] == "1000"
    assert first["group"].split(":")[2] == "2001"
    assert {"sudo", "operators"} <= set(first["groups_of_core"])
    assert first["stat"] == ["/etc/gateway core operators 750",
                             "/etc/gateway/app.conf core operators 640"]


def test_blueprint_enabled_units_are_active(story: dict[str, Any]) -> None:
    units = story["first"]["units"]
    assert units.stdout.split() == ["active", "active"], units.stdout + units.stderr


def test_two_devices_reach_the_server_and_each_other_on_the_lab_network(
        story: dict[str, Any]) -> None:
    assert story["net"] == {"edge1->server": "200", "edge2->server": "200",
                            "edge1->edge2": "200", "edge2->edge1": "200"}


def test_timers_stage_the_update_over_http_and_the_apply_timer_reboots_into_it(
        story: dict[str, Any]) -> None:
    journal = story["edge2_journal_prev"]
    assert "agent: stage: staging update" in journal, journal
    assert "apply: rebooting into the staged update" in journal, journal
    before, after = story["stats_before_update"], story["stats_after_update"]
    assert after["files"] > before["files"] and after["bytes"] > before["bytes"]


def test_updated_device_boots_green_with_the_new_package(
        story: dict[str, Any], gateway_images: Any) -> None:
    deps = story["edge2_status"]["deployments"]
    assert deps[0]["checksum"] == gateway_images.v2 and deps[0]["booted"]
    assert deps[1]["checksum"] == gateway_images.v1 and not deps[1]["booted"]
    assert story["grubenv2"].get("boot_success") == "1"
    assert "boot_counter" not in story["grubenv2"]
    assert story["edge2_strace"].returncode == 0
    assert story["edge2_strace"].stdout.strip() == "/usr/bin/strace"


def test_failing_check_boots_the_new_commit_three_times_then_falls_back(
        story: dict[str, Any], gateway_images: Any) -> None:
    hist = story["edge1_history"]
    v1, v2 = gateway_images.v1, gateway_images.v2
    boots = [(h["entry"], h["deployment"][:64], h["rc"]) for h in hist]
    # v1 (stages v2, the apply timer reboots), then v2 three times, each red and rebooting;
    # the boot running now is GRUB's fallback (entry 1) into v1
    assert boots == [(0, v1, 133)] + [(0, v2, 133)] * 3, hist
    st = story["edge1_status"]
    assert st["deployments"][0]["checksum"] == v1 and st["deployments"][0]["booted"]
    assert story["edge1_strace"].returncode != 0


def test_fallback_is_in_the_persistent_journal_and_the_commit_is_denylisted(
        story: dict[str, Any], gateway_images: Any) -> None:
    assert "FALLBACK BOOT DETECTED" in story["journal_fallback"]
    # the persistent journal holds every boot: v1 (staged, applied), three red, the fallback
    assert len(story["journal_boots"]) == 5
    assert gateway_images.v2 in story["edge1_status"]["denylist"]


def test_motd_shows_the_fallback_and_the_timer_has_the_configured_schedule(
        story: dict[str, Any]) -> None:
    assert "Boot Status is GREEN" in story["motd"] and "FALLBACK BOOT DETECTED" in story["motd"]
    # the generator turned agent.toml's schedule = "*:*:0/5" into the timer's OnCalendar=
    assert "*-*-* *:*:00/5" in story["timer"], story["timer"]


def test_real_ostree_agrees_with_the_deployments_after_the_story(
        story: dict[str, Any], gateway_images: Any) -> None:
    v1, v2 = gateway_images.v1, gateway_images.v2
    for key, expected in (("sysroot1", [v1, v2]), ("sysroot2", [v2, v1])):
        proc = subprocess.run(["ostree", "admin", f"--sysroot={story[key]}", "status"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert re.findall(r"\b([0-9a-f]{64})\.\d+", proc.stdout) == expected, proc.stdout


def test_timers_do_not_stage_the_rolled_back_commit_again(
        story: dict[str, Any], gateway_images: Any) -> None:
    agent = story["agent_after"]
    assert agent["action"] == "nothing" and "rolled back before" in agent["reason"], agent
    later = story["edge1_status_later"]
    assert not any(d["staged"] for d in later["deployments"])
    assert [d["checksum"] for d in later["deployments"]] == [gateway_images.v1,
                                                             gateway_images.v2]


def test_lab_down_leaves_no_namespace_veth_or_process(story: dict[str, Any]) -> None:
    lab = story["lab"]
    for name in ("edge1", "edge2"):
        assert lab.net.device_netns(name) not in story["netns_after"]
        assert lab.net.veth(name) not in story["lab_links_after"]
    # the veths and the bridge only ever lived in the lab's namespaces, never on the host
    for link in (lab.net.veth("edge1"), lab.net.veth("edge2"), "labbr0"):
        assert link not in story["host_links_during"] + story["host_links_after"]
    leftovers = [line for line in story["ps_after"].splitlines()
                 if str(lab.path) in line or str(story["sysroot1"]) in line
                 or str(story["sysroot2"]) in line]
    assert leftovers == []
