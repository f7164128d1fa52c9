"""``atomicedge lab ...``: devices under systemd-nspawn on a lab network of their own.

``up`` boots a sysroot detached (it reboots like a machine, its emulated GRUB counts boots);
``exec`` runs a command inside; ``console`` follows its console; ``ls``; ``down``; ``ip``;
``host -- CMD`` runs a host command on the lab network (to serve a repo to the devices).
The lab's state lives under ``--lab-dir`` (default ``$ATOMICEDGE_LAB_DIR`` or
``/run/atomicedge/lab``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HELP_CMD = "the command (after --)"


def register(sub: Any) -> None:
    lab = sub.add_parser("lab", help="lab devices under systemd-nspawn, on a lab network")
    lab.add_argument("--lab-dir", type=Path, help="lab state (default $ATOMICEDGE_LAB_DIR or "
                     "/run/atomicedge/lab)")
    verbs = lab.add_subparsers(dest="verb", metavar="VERB")

    p = verbs.add_parser("up", help="boot a sysroot as a device, detached")
    p.add_argument("name")
    p.add_argument("--sysroot", required=True, type=Path)
    p.add_argument("--ip", help="its address on the lab network (default: the next free one)")
    p.add_argument("--subnet", help="the lab network, when this creates the lab "
                   "(default 10.213.0.0/24)")
    p.add_argument("--wait", action="store_true", help="return once the boot has finished")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for --wait")
    p.set_defaults(func=cmd_up)

    p = verbs.add_parser("wait", help="wait until a device has finished booting")
    p.add_argument("name")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_wait)

    p = verbs.add_parser("exec", help="run a command inside a device; exits with its code")
    p.add_argument("name")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help=HELP_CMD)
    p.set_defaults(func=cmd_exec)

    p = verbs.add_parser("console", help="show a device's console (follows it)")
    p.add_argument("name")
    p.add_argument("--no-follow", action="store_true", help="print what is there and exit")
    p.set_defaults(func=cmd_console)

    p = verbs.add_parser("ls", help="devices: state, address, booted deployment, boots")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("down", help="power a device off and remove it from the lab network")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every device, and the lab network")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for a clean poweroff")
    p.set_defaults(func=cmd_down)

    p = verbs.add_parser("ip", help="a device's address on the lab network ('host': the host's)")
    p.add_argument("name")
    p.set_defaults(func=cmd_ip)

    p = verbs.add_parser("host", help="run a host command on the lab network (e.g. repo serve)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help=HELP_CMD)
    p.set_defaults(func=cmd_host)
    for verb in verbs.choices.values():  # --lab-dir also after the verb
        verb.add_argument("--lab-dir", type=Path, default=argparse.SUPPRESS,
                          help=argparse.SUPPRESS)
    lab.set_defaults(func=lambda a: (lab.print_help(), 2)[1])


def _lab(args: argparse.Namespace, subnet: str | None = None) -> Any:
    from atomicedge.lab.devices import Lab
    return Lab.open(args.lab_dir, subnet)


def _command(args: argparse.Namespace) -> list[str]:
    from atomicedge.errors import UsageError
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command given", "put it after --, e.g. lab exec edge1 -- uptime")
    return cmd


def cmd_up(args: argparse.Namespace) -> int:
    lab = _lab(args, args.subnet)
    d = lab.up(args.name, args.sysroot, args.ip)
    print(f"{d.name}: up at {d.ip} (console: atomicedge lab console {d.name})", flush=True)
    if args.wait:
        d = lab.wait(args.name, args.timeout)
        print(f"{d.name}: booted ({d.state.get('deployment')}, boot {d.state.get('boots')})")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    d = _lab(args).wait(args.name, args.timeout)
    print(f"{d.name}: booted ({d.state.get('deployment')}, boot {d.state.get('boots')})")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    argv = _lab(args).exec_argv(args.name, _command(args))
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127  # not reached


def cmd_host(args: argparse.Namespace) -> int:
    argv = _lab(args).host_argv(_command(args))
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # the command keeps this PID: kill it by that
    return 127  # not reached


def cmd_console(args: argparse.Namespace) -> int:
    lab = _lab(args)
    d = lab.device(args.name)
    path = d.dir / "console.log"
    while not path.exists() and d.alive and not args.no_follow:
        time.sleep(0.2)  # the supervisor starts the first boot
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if args.no_follow or not (d.dir / "device.json").exists() or not d.alive:
                return 0
            time.sleep(0.2)


def _row(d: Any) -> dict[str, Any]:
    dep = d.state.get("deployment") or ""
    return {"name": d.name, "state": d.status, "ip": d.ip, "deployment": dep,
            "boots": d.state.get("boots", 0), "sysroot": d.sysroot}


def cmd_ls(args: argparse.Namespace) -> int:
    lab = _lab(args)
    rows = [_row(d) for d in lab.devices()]
    if args.json:
        print(json.dumps({"host": lab.net.host_ip, "subnet": str(lab.net.subnet),
                          "devices": rows}, indent=2))
        return 0
    print(f"{'NAME':<12} {'STATE':<10} {'ADDRESS':<15} {'BOOTS':>5}  DEPLOYMENT")
    for r in rows:
        print(f"{r['name']:<12} {r['state']:<10} {r['ip']:<15} {r['boots']:>5}  "
              f"{r['deployment'][:16] or '-'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from atomicedge.errors import UsageError
    lab = _lab(args)
    if args.all:
        names = lab.down_all(args.timeout)
        print(f"down: {', '.join(names) or 'no devices'}; lab network removed")
        return 0
    if not args.name:
        raise UsageError("which device?", "lab down NAME, or lab down --all")
    lab.down(args.name, args.timeout)
    print(f"{args.name}: down")
    return 0


def cmd_ip(args: argparse.Namespace) -> int:
    print(_lab(args).ip(args.name))
    return 0
