"""keepalived VRRP between two lab devices: the VIP follows the healthy device, and a client
asking it all the while loses no more than the failover itself takes.

A crash is ``virsh destroy``: the primary's nspawn and systemd SIGKILLed at once, its NIC cut.
The backup takes the VIP and its app starts from zero on the first request; when the primary is
back it takes the VIP back (preemption, keepalived's default) and its app starts from zero.

The prober (:mod:`atomicedge.lab.probe`) sends a request to VIP:8080 every 20 ms from the lab's
host side, each on a new connection with a 0.5 s deadline; the app's answer names the device.
Each round's *measured failover time* does not come from the prober: from the kill until the
backup holds the VIP per ``ip addr`` (polled every 10 ms), plus the backup's app start from
zero per its systemd (the socket's trigger to the proxy ready); the way back likewise: from the
primary holding the VIP until it holds it alone and its app's socket listens (per its systemd:
keepalived can take the VIP a moment before core's user manager has the socket up after the
boot; connections meanwhile are refused), plus its app's start from zero.

MARGIN, what the prober may see on top of that, load or not:
  * up to one request cycle (deadline + interval) between the last answer and the kill: a
    request that was slow, or in flight, when the primary died;
  * up to one more cycle after the VIP moved: the sequential prober may be stuck in a request
    sent to the old holder (its SYN is lost) until that request's deadline;
  * 0.5 s for the path the measured time leaves out: the host's gratuitous-ARP update,
    systemd's socket trigger before the start job, the proxy's exec/accept/connect after it is
    running; a few scheduler wake-ups each, below 0.1 s idle.
Load (two busy loops) slows keepalived's detection and podman's start from zero: both sides of
the comparison contain them, as one event of the same round, so load cancels out; the prober's
part is bounded by its own deadline and interval. The VIP poll lags by at most one poll under
load, which can only make the measured time longer (lenient by one ``ip`` run).
"""

from __future__ import annotations

import math

from atomicedge.lab import probe
from atomicedge.lab.demo_apps import PORT, AppLab, poll

TUNED = 0.2         # seconds between adverts (VRRPv3) for the 10 rounds: keepalived detects a
                    # crash after 3 x 0.2 s + skew instead of 3.6 s with the default 1 s
ROUNDS = 10
MARGIN = 2 * (probe.REQUEST_TIMEOUT + probe.INTERVAL) + 0.5


def _ready(apps: AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    for name in ("edge1", "edge2"):
        poll(f"core's app socket on {name}", lambda n=name: apps.app_ready(n), 180, every=0.5)
    probe.scale_to_zero(apps, "edge2")


def _table(rounds: list[probe.Round], records: list[probe.Probe]) -> str:
    lines = ["round  vip   app  failover outage | vip   app  failback outage listen | failed"]
    for i, r in enumerate(rounds, 1):
        s = probe.seen(r, records)
        out = s.outage.length if s.outage else math.nan
        back = s.outage_back.length if s.outage_back else math.nan
        lines.append(f"{i:5}  {r.vip_failover:4.2f} {r.backup_start:4.2f} {r.failover:8.2f} "
                     f"{out:6.2f} | {r.primary_alone - r.primary_holds:4.2f} "
                     f"{r.primary_start:4.2f} {r.failback:8.2f} {back:6.2f} "
                     f"{r.primary_listens - r.primary_holds:6.2f} | {s.failed} "
                     f"{probe.errors(records, r.down, r.back)} "
                     f"{probe.errors(records, r.back, r.end)}")
    return "\n".join(lines)


def _problems(r: probe.Round, s: probe.Seen) -> list[str]:
    bad = []
    if not s.on_backup or set(s.on_backup) != {r.backup}:
        bad.append(f"while {r.backup} held the VIP, answers came from {sorted(set(s.on_backup))}")
    if not s.on_primary or set(s.on_primary) != {r.primary}:
        bad.append(f"once {r.primary} held it again, answers came from "
                   f"{sorted(set(s.on_primary))}")
    if s.outage is None or s.outage.length > r.failover + MARGIN:
        bad.append(f"outage {s.outage} > failover {r.failover:.2f} s + {MARGIN:.2f} s")
    if s.outage_back is None or s.outage_back.length > r.failback + MARGIN:
        bad.append(f"outage {s.outage_back} > failback {r.failback:.2f} s + {MARGIN:.2f} s")
    return bad


def test_vip_follows_a_crashed_primary_and_back_ten_times_losing_no_more_than_the_failover(
        apps: AppLab) -> None:
    _ready(apps)
    apps.set_advert(TUNED)
    _ready(apps)
    prober = probe.Prober(apps.vip_ip, PORT, enter=apps.lab.in_host).start()
    rounds: list[probe.Round] = []
    try:
        probe.wait_answer(prober, "edge1", after=-math.inf)
        for _ in range(ROUNDS):
            rounds.append(probe.crash_round(apps, prober, "edge1", "edge2"))
    finally:
        records = prober.stop()
        apps.set_advert(1.0)
    table = _table(rounds, records)
    print(f"\n{len(records)} requests, {probe.failures(records)} failed, longest outage "
          f"{probe.outage(records)}\n{table}")
    # every round: the primary answered, then the backup, then the primary again
    assert [r.who for r in probe.runs(records)] == ["edge1", "edge2"] * ROUNDS + ["edge1"], table
    problems = [f"round {i}: {p}" for i, r in enumerate(rounds, 1)
                for p in _problems(r, probe.seen(r, records))]
    assert not problems, "\n".join(problems) + "\n" + table
    _ready(apps)
    probe.scale_to_zero(apps, "edge1")        # the app lab as the other tests expect it


def test_graceful_stop_hands_the_vip_over_and_back_losing_no_more_than_the_failover(
        apps: AppLab) -> None:
    _ready(apps)
    with probe.Prober(apps.vip_ip, PORT, enter=apps.lab.in_host) as prober:
        probe.wait_answer(prober, "edge1", after=-math.inf)
        r = probe.stop_round(apps, prober, "edge1", "edge2")
    records = prober.records
    s = probe.seen(r, records)
    assert [x.who for x in probe.runs(records)] == ["edge1", "edge2", "edge1"]
    assert not _problems(r, s), _table([r], records)
    assert apps.holder() == "edge1"
    probe.scale_to_zero(apps, "edge1")
