"""Failover benchmark: keepalived VRRP between two lab devices booted from the composed
``examples/gateway-apps.toml`` (one image, two provisionings), and the app's time to first
response from zero.

Usage: .venv/bin/python bench/failover.py [--rounds N] [--tuned SECONDS] [--workdir DIR]

First, N times with the app at zero on the primary: seconds from ``GET VIP:8080`` on the lab's
host side to its answer (socket -> proxy -> rootless podman container started from zero).
Then per advert interval (keepalived's default 1 s, then the tuned sub-second one), with the
prober of :mod:`atomicedge.lab.probe` asking VIP:8080 every 20 ms all the while:
  * crash, N rounds: the primary's nspawn and systemd SIGKILLed at once, its NIC cut
    (``virsh destroy``); the primary then boots again and takes the VIP back (preemption);
  * graceful, N rounds: ``systemctl stop keepalived`` on the primary (priority 0 advert), then
    started again.
Per round: *failover* = seconds from the kill/stop until the backup holds the VIP per
``ip addr`` (polled every 10 ms); the backup's app start from zero (its systemd: socket trigger
to proxy ready; the backup is at zero before each round); the client's outage (the longest time
without an answer, from the prober) and its failed requests; the way back likewise.
The last line: ``failover after crash: median X s, max Y s (advert Z s)`` for the tuned interval.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.helpers import remove_sysroot
from tests.workloads.conftest import REF, compose_apps

from atomicedge.lab import demo_apps, probe
from atomicedge.lab.devices import Lab

KINDS = {"crash": probe.crash_round, "graceful": probe.stop_round}


def _stats(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s"


def _ready(apps: demo_apps.AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    for name in ("edge1", "edge2"):
        demo_apps.poll(f"the app socket on {name}", lambda n=name: apps.app_ready(n), 180,
                       every=0.5)
    probe.scale_to_zero(apps, "edge2")


def _first_responses(apps: demo_apps.AppLab, rounds: int) -> list[float]:
    """From zero as after the app's idle time: its proxy exits after 10 s without connections
    and the container stops. (Stopping it by hand and asking at once, cycle after cycle,
    starts httpd.service more than 5 times in 10 s: systemd's start limit fails the start and
    the proxy waits 60 s for the port.)"""
    out = []
    for _ in range(rounds):
        demo_apps.poll("the app to scale to zero", lambda: apps.containers("edge1") == [],
                       180, every=0.5)
        body, secs = apps.get(timeout=120)
        assert probe.responder(body) == "edge1", body
        out.append(secs)
        print(f"  first response from zero: {secs:.2f} s", flush=True)
    return out


def _rounds(apps: demo_apps.AppLab, kind: str, n: int,
            advert: float) -> tuple[list[probe.Round], list[probe.Probe]]:
    do: Callable[..., probe.Round] = KINDS[kind]
    rounds: list[probe.Round] = []
    with probe.Prober(apps.vip_ip, demo_apps.PORT, enter=apps.lab.in_host) as prober:
        probe.wait_answer(prober, "edge1", after=-math.inf)
        for i in range(n):
            r = do(apps, prober, "edge1", "edge2")
            s = probe.seen(r, prober.records)
            rounds.append(r)
            print(f"  advert {advert:g} s {kind} {i + 1}: VIP to the backup {r.vip_failover:.2f} s"
                  f" + its app from zero {r.backup_start:.2f} s; client outage "
                  f"{_len(s.outage):.2f} s ({s.failed} failed: "
                  f"{probe.errors(prober.records, r.down, r.back)} "
                  f"{probe.errors(prober.records, r.back, r.end)}); back: {r.failback:.2f} s (VIP "
                  f"{r.primary_alone - r.primary_holds:.2f} s, socket listening "
                  f"{r.primary_listens - r.primary_holds:+.2f} s, app {r.primary_start:.2f} s), "
                  f"outage {_len(s.outage_back):.2f} s", flush=True)
    return rounds, prober.records


def _len(g: probe.Gap | None) -> float:
    return g.length if g else math.nan


def _report(advert: float, kind: str, rounds: list[probe.Round],
            records: list[probe.Probe]) -> None:
    seen = [probe.seen(r, records) for r in rounds]
    print(f"advert {advert:g} s, {kind} ({len(rounds)} rounds): "
          f"failover (VIP on the backup) {_stats([r.vip_failover for r in rounds])}; "
          f"the backup's app from zero {_stats([r.backup_start for r in rounds])}; "
          f"client outage {_stats([_len(s.outage) for s in seen])}, "
          f"{sum(s.failed for s in seen)} of {len(records)} requests failed; "
          f"way back: {_stats([r.failback for r in rounds])}, "
          f"client outage {_stats([_len(s.outage_back) for s in seen])}")


def _bench(apps: demo_apps.AppLab, rounds: int, tuned: float) -> dict[float, list[float]]:
    crash: dict[float, list[float]] = {}
    for advert in (1.0, tuned):
        apps.set_advert(advert)
        _ready(apps)
        for kind in KINDS:
            done, records = _rounds(apps, kind, rounds, advert)
            _report(advert, kind, done, records)
            if kind == "crash":
                crash[advert] = [r.vip_failover for r in done]
    return crash


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--tuned", type=float, default=0.2, help="tuned advert interval (s)")
    ap.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    scratch = args.workdir is None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-failover-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print("composing examples/gateway-apps.toml ...", flush=True)
    compose_apps(work / "repo")
    lab = Lab.open(work / "lab")
    try:
        apps = demo_apps.build(lab, work, work / "repo", REF)
        _ready(apps)
        first = _first_responses(apps, args.rounds)
        print(f"first response from zero: {_stats(first)} ({len(first)} runs)", flush=True)
        crash = _bench(apps, args.rounds, args.tuned)
    finally:
        demo_apps.cleanup(lab)
        for sysroot in work.glob("*-sysroot"):
            remove_sysroot(sysroot)
        if scratch:
            shutil.rmtree(work, ignore_errors=True)
    for advert, xs in crash.items():
        print(f"failover after crash (VIP on the backup), advert {advert:g} s: {_stats(xs)}")
    tuned = crash[args.tuned]
    print(f"failover after crash: median {statistics.median(tuned):.2f} s, max {max(tuned):.2f} s "
          f"(advert {args.tuned:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
