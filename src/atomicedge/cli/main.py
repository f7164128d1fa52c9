"""Command-line entry point: ``atomicedge GROUP VERB ...``.

Each command group lives in its own module exposing ``register(subparsers)``; handlers are
``func(args) -> int``. This module owns the one place where typed errors become one-line
messages and exit codes, so no traceback reaches a user for a problem they can fix.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from atomicedge import __version__
from atomicedge.errors import AtomicEdgeError, ToolError

# command-group modules under atomicedge.cli; a group that is not installed yet is skipped
GROUPS = ("repo", "compose", "composer", "device", "quadlet", "lab", "vm", "demo",
          "butane")

log = logging.getLogger("atomicedge")
TOOL_OUTPUT_LINES = 20  # how much of a failed outside tool's stderr is shown


def _print_tool_output(stderr: str) -> None:
    """The tail of a failed tool's stderr, indented, so "see the output above" has output."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return
    shown = lines[-TOOL_OUTPUT_LINES:]
    if len(lines) > len(shown):
        print(f"  ({len(lines) - len(shown)} earlier lines of the tool's output not shown)",
              file=sys.stderr)
    for line in shown:
        print(f"    {line}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def _wanted_groups(argv: Sequence[str]) -> tuple[str, ...]:
    """Only the group being run is imported: start-up time is part of every command."""
    for arg in argv:
        if not arg.startswith("-"):
            return (arg,) if arg in GROUPS else GROUPS
    return GROUPS


# the command line being parsed, so groups can skip importing verbs that are not run
CURRENT_ARGV: list[str] = []


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    CURRENT_ARGV[:] = list(argv)
    parser = _Parser(prog="atomicedge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"atomicedge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log outside-tool commands")
    sub = parser.add_subparsers(dest="group", metavar="GROUP", parser_class=_Parser)
    for name in _wanted_groups(argv):
        try:
            module = importlib.import_module(f"atomicedge.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"atomicedge.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = func(args)
    except AtomicEdgeError as exc:
        if isinstance(exc, ToolError):
            _print_tool_output(exc.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        # a device ships only the device closure (compose/closure.py): host verbs end here
        if not (exc.name or "").startswith("atomicedge."):
            raise
        print(f"error: this command needs {exc.name}, which is not installed on this system "
              "(hint: run it on the build or lab host)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        # an unexpected file-system refusal is still the user's environment, not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
