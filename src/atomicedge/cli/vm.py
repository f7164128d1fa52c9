"""``atomicedge vm ...``: boot disk images in QEMU (``run``), talk to them (``exec``), cut their
power (``kill``), list them (``ls``), wait for them (``wait``). See atomicedge.lab.vm.

VM state lives under ``$ATOMICEDGE_VM_DIR`` (default ``/run/atomicedge/vms``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("vm", help="boot disk images in QEMU (TCG), exec, power cut")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    r = verbs.add_parser("run", help="boot a qcow2/raw image (console on the first serial port)")
    r.add_argument("image", type=Path)
    r.add_argument("--name", default="vm", help="VM name (default: vm)")
    r.add_argument("--uefi", action="store_true", help="boot with OVMF instead of SeaBIOS")
    r.add_argument("--smp", type=int, default=2)
    r.add_argument("--mem", type=int, default=2048, help="MiB")
    r.add_argument("--forward", action="append", default=[], metavar="HOST:GUEST",
                   help="forward 127.0.0.1:HOST to the guest's TCP port GUEST (repeatable)")
    r.add_argument("--console", type=Path, metavar="FILE", help="console log (default: in the "
                   "VM's directory)")
    r.add_argument("--ignition", type=Path, metavar="FILE",
                   help="Ignition config for fw_cfg opt/com.coreos/config")
    r.add_argument("--accel", default="tcg", choices=("tcg", "kvm"),
                   help="tcg (default; KVM hangs on these machines)")
    r.add_argument("--detach", action="store_true", help="start in the background")
    r.set_defaults(func=cmd_run)

    e = verbs.add_parser("exec", help="run a command in the guest (needs an image built with "
                         "--vm-agent)")
    e.add_argument("name")
    e.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --)")
    e.add_argument("--timeout", type=float, default=600.0)
    e.set_defaults(func=cmd_exec)

    w = verbs.add_parser("wait", help="wait until the guest's agent answers")
    w.add_argument("name")
    w.add_argument("--timeout", type=float, default=600.0)
    w.set_defaults(func=cmd_wait)

    k = verbs.add_parser("kill", help="power cut: kill QEMU at once")
    k.add_argument("name")
    k.set_defaults(func=cmd_kill)

    ls = verbs.add_parser("ls", help="list VMs")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)


def cmd_run(args: argparse.Namespace) -> int:
    from atomicedge.lab import vm
    spec = vm.VmSpec(args.name, args.image, uefi=args.uefi, smp=args.smp, mem=args.mem,
                     forwards=args.forward, console=args.console, ignition=args.ignition,
                     accel=args.accel)
    if not args.detach:
        return vm.run(spec, detach=False)
    pid = vm.run(spec, detach=True)
    print(f"vm {args.name} running (qemu pid {pid}); console {vm.console_path(args.name)}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from atomicedge.errors import UsageError
    from atomicedge.lab import vm
    cmd = list(args.cmd)
    if cmd[:1] == ["--timeout"]:            # REMAINDER also takes options after NAME
        if len(cmd) < 2:
            raise UsageError("vm exec: --timeout needs a number of seconds")
        try:
            args.timeout = float(cmd[1])
        except ValueError:
            raise UsageError(f"vm exec: --timeout {cmd[1]!r} is not a number") from None
        cmd = cmd[2:]
    cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
    if not cmd:
        raise UsageError("vm exec: no command given", "atomicedge vm exec NAME -- CMD ...")
    import shlex
    res = vm.exec_(args.name, shlex.join(cmd) if len(cmd) > 1 else cmd[0],
                   timeout=args.timeout)
    sys.stdout.buffer.write(res.out)
    sys.stderr.buffer.write(res.err)
    return res.rc


def cmd_wait(args: argparse.Namespace) -> int:
    from atomicedge.lab import vm
    took = vm.wait_agent(args.name, args.timeout)
    print(f"vm {args.name}: agent answered after {took:.1f} s")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from atomicedge.errors import NotFoundError
    from atomicedge.lab import vm
    if not vm.kill(args.name):
        raise NotFoundError(f"VM {args.name!r} is not running")
    print(f"vm {args.name}: power cut")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from atomicedge.lab import vm
    rows = vm.ls()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = f"running (pid {r['pid']})" if r["running"] else "stopped"
        print(f"{r['name']:<16} {state:<22} {'uefi' if r['uefi'] else 'bios':<5} {r['image']}")
    return 0
