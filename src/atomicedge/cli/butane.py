"""``atomicedge butane FCC.yaml [-o config.ign] [--strict] [--files-dir DIR]``.

Fedora CoreOS Config (``variant: fcos``) to Ignition JSON, like Butane (not packaged in
Debian 12); the output is checked with Debian's ``ignition-validate`` unless ``--no-validate``.
Nothing is written when the config is refused. See docs/provisioning.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("butane", help="Fedora CoreOS Config YAML -> Ignition JSON")
    p.add_argument("config", type=Path, metavar="FCC.yaml")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    p.add_argument("--strict", action="store_true", help="fail on warnings")
    p.add_argument("-d", "--files-dir", type=Path, metavar="DIR",
                   help="where `local:` contents are read from")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the ignition-validate check of the output")
    p.set_defaults(func=cmd_butane)


def cmd_butane(args: argparse.Namespace) -> int:
    from atomicedge.compose import butane
    from atomicedge.fsutil import atomic_write
    text, warnings = butane.convert_file(args.config, files_dir=args.files_dir,
                                         strict=args.strict)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not args.no_validate:
        butane.validate(text)
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write(args.output, text, mode=0o600)
    return 0
