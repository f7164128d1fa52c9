"""``atomicedge demo``: the seed demo, end to end, on an embedded default.

Acts, each a library call of its subsystem: (1) the store commits a sample tree and the real
``ostree fsck`` judges it; (2) the composer service composes the gateway blueprint v1 and v2
(v1 as parent), watched with composer-cli-style status lines;
(3) the repo is served, pulled with a live progress bar, updated through a static delta;
(4) a device is installed, boots, takes a bad update, rolls back by itself after three
failed boots, then takes the good one. Any act that fails stops the demo with exit 1.
``--real`` runs act 4 on a real boot instead: a qcow2 in QEMU with GRUB counting the boots
(:mod:`atomicedge.lab.demo_real`; alone, or after the acts named with ``--only``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

from atomicedge.lab import demo_apps, demo_compose, demo_device, demo_net, demo_real, demo_store

console = Console(soft_wrap=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the seed demo end to end")
    p.add_argument("--workdir", default="demo-work", help="scratch directory (recreated)")
    p.add_argument("--only", choices=["store", "compose", "net", "device", "apps"],
                   action="append",
                   help="run only these acts")
    p.add_argument("--real", action="store_true",
                   help="the OS-update act on a real boot: QEMU (TCG), GRUB, a qcow2 disk "
                        "(runs alone unless --only names acts to run before it)")
    p.set_defaults(func=cmd_demo)


def _act(title: str, workdir: Path, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    console.print(Rule(title))
    workdir.mkdir(parents=True, exist_ok=True)
    return call()


def cmd_demo(args: argparse.Namespace) -> int:
    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    acts = args.only or ([] if args.real else ["store", "compose", "net", "device", "apps"])
    t0 = time.monotonic()
    results: dict[str, Any] = {}
    if "store" in acts:
        results["store"] = _act("Act 1 — the OSTree-format store", work / "store",
                                lambda: demo_store.run(work / "store", console))
    if "compose" in acts:
        results["compose"] = _act("Act 2 — build images from a blueprint", work / "compose",
                                  lambda: demo_compose.run(work / "compose", console))
    source = results.get("compose") or results.get("store") or {}
    if "net" in acts and source:
        results["net"] = _act(
            "Act 3 — serve, pull, update with a static delta", work / "net",
            lambda: demo_net.run(work / "net", Path(source["repo"]), source["ref"], console))
    composed = results.get("compose")
    if "device" in acts and composed:
        results["device"] = _act(
            "Act 4 — a device: update, three failed boots, automatic rollback", work / "device",
            # the composed gateway v1 and v2 of act 2, served on the lab network
            lambda: demo_device.run(work / "device", Path(composed["repo"]), composed["ref"],
                                    console))
    if "apps" in acts:
        results["apps"] = _act(
            "Act 5 — the applications: scale from zero, failover, restart, auto-update",
            work / "apps",
            lambda: demo_apps.run(work / "apps", console))
    if args.real:
        results["real"] = _act(
            "Act 4, booted for real — QEMU: update over HTTP, three failed boots counted by "
            "GRUB, fallback", work / "real", lambda: demo_real.run(work / "real", console))
    console.print(Rule(f"demo finished in {time.monotonic() - t0:.1f} s"))
    missed = missed_outcomes(results)
    for line in missed:
        console.print(f"[red]demo: the story did not happen:[/] {line}")
    return 1 if missed else 0


# What each act must have shown (its result keys): a run that printed every step but ended
# elsewhere is a failed demo, not a finished one.
OUTCOMES: dict[str, tuple[tuple[str, Callable[[Any], bool], str], ...]] = {
    "device": (("fallback_seen", bool, "after three red boots the device is back on v1"),
               ("final_commit_strace", bool, "the second attempt boots v2 with strace")),
    "apps": (("updated", lambda body: "app v2" in str(body),
              "after podman auto-update the VIP answers from app v2"),),
    "real": (("fallback_booted", bool, "GRUB's fallback booted v1 again"),
             ("fallback_strace_absent", bool, "strace is gone after the fallback"),
             ("final_booted_v2", bool, "the second attempt booted v2"),
             ("final_strace", bool, "strace is there on v2")),
}


def missed_outcomes(results: dict[str, Any]) -> list[str]:
    """The outcomes the acts that ran did not show (pure; ``results`` as the acts returned)."""
    return [f"{act}: {text} ({key} = {results[act].get(key)!r})"
            for act, checks in OUTCOMES.items() if act in results
            for key, holds, text in checks if not holds(results[act].get(key))]
