"""``atomicedge quadlet [--user] --dryrun``: the units the Quadlet generator would write.

Like ``podman-system-generator --dryrun``: every unit as ``---NAME.service---`` followed by its
text; files the generator refuses are reported on stderr with their path and line (exit 1), the
others are still printed. ``QUADLET_UNIT_DIRS`` limits the search to the directories it lists.
``--output DIR`` writes the units (and ``[Install]`` symlinks) into DIR instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("quadlet", help="Quadlet units (.container/.volume/.network) -> services")
    p.add_argument("--user", action="store_true", help="rootless: the user generator's dirs")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dryrun", action="store_true", help="print the units it would write")
    mode.add_argument("--output", type=Path, metavar="DIR", help="write the units into DIR")
    p.set_defaults(func=cmd_quadlet)


def cmd_quadlet(args: argparse.Namespace) -> int:
    from atomicedge.workload import quadlet
    argv0 = "podman-user-generator" if args.user else "podman-system-generator"
    result = quadlet.generate(args.user, argv0=f"atomicedge quadlet ({argv0})")
    if args.dryrun:
        sys.stdout.write(quadlet.dryrun_text(result))
    else:
        quadlet.write_output(result, str(args.output))
    for warning in result.warnings:
        print(warning.replace("Warning: ", "warning: ", 1), file=sys.stderr)
    for err in result.errors:
        print(f"error: {err}", file=sys.stderr)
    if not result.units and not result.errors:
        print("no Quadlet files found in: " + " ".join(quadlet.unit_dirs(args.user)),
              file=sys.stderr)
    return 1 if result.errors else 0
