"""Failover benchmark: keepalived VRRP between two lab devices booted from the composed
``examples/gateway-apps.toml`` (one image, two provisionings), and the app's time to first
response from zero.

Usage: .venv/bin/python bench/failover.py [--rounds N] [--tuned SECONDS] [--workdir DIR]

Per advert interval (keepalived's default 1 s, then the tuned one):
  * crash: the primary's nspawn and systemd SIGKILLed at once (``virsh destroy``), its NIC
    gone; seconds from the kill until the backup alone holds the VIP (polled every 10 ms);
    the primary then boots again and takes the VIP back (preemption);
  * graceful: ``systemctl stop keepalived`` on the primary (it sends priority 0); seconds
    until the backup holds the VIP; keepalived started again, the primary takes it back.
Then, with the app idle (no container anywhere): seconds from the first ``GET VIP:8080`` on
the lab's host side to its answer (socket -> proxy -> rootless podman container), N times.
The last line: ``failover after crash: median X s, max Y s (advert Z s)`` for the tuned interval.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.helpers import remove_sysroot
from tests.workloads.conftest import REF, compose_apps

from atomicedge.lab import demo_apps
from atomicedge.lab.devices import Lab


def _stats(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s"


def _first_responses(apps: demo_apps.AppLab, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        demo_apps.poll("the app to scale to zero", lambda: apps.containers("edge1") == [],
                       180, every=0.5)
        body, secs = apps.get(timeout=120)
        assert body.startswith("hello from app"), body
        out.append(secs)
        print(f"  first response from zero: {secs:.2f} s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--tuned", type=float, default=0.2, help="tuned advert interval (s)")
    ap.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-failover-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print("composing examples/gateway-apps.toml ...", flush=True)
    compose_apps(work / "repo")
    lab = Lab.open(work / "lab")
    results: dict[float, dict[str, list[float]]] = {}
    try:
        apps = demo_apps.build(lab, work, work / "repo", REF)
        apps.wait_holder("edge1", timeout=180)
        for name in ("edge1", "edge2"):
            demo_apps.poll("the app socket", functools.partial(apps.app_ready, name), 180,
                           every=0.5)
        first = _first_responses(apps, min(args.rounds, 5))
        for advert in (1.0, args.tuned):
            apps.set_advert(advert)
            apps.wait_holder("edge1", timeout=60)
            r: dict[str, list[float]] = {"crash": [], "graceful": [], "back": []}
            for i in range(args.rounds):
                took, back = apps.failover_after_crash("edge1", "edge2")
                r["crash"].append(took)
                r["back"].append(back)
                r["graceful"].append(apps.failover_after_stop("edge1", "edge2"))
                print(f"  advert {advert:g} s round {i + 1}: crash {took:.2f} s, graceful "
                      f"{r['graceful'][-1]:.2f} s, back on the primary {back:.2f} s after "
                      "its boot", flush=True)
            results[advert] = r
    finally:
        demo_apps.cleanup(lab)
        for sysroot in work.glob("*-sysroot"):
            remove_sysroot(sysroot)
    print(f"first response from zero: {_stats(first)} ({len(first)} runs)")
    for advert, r in results.items():
        print(f"advert {advert:g} s: crash {_stats(r['crash'])}; graceful {_stats(r['graceful'])}; "
              f"preempted back {_stats(r['back'])} after the primary's boot")
    tuned = results[args.tuned]["crash"]
    print(f"failover after crash: median {statistics.median(tuned):.2f} s, max {max(tuned):.2f} s "
          f"(advert {args.tuned:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
