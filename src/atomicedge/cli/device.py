"""``atomicedge device ...``: rpm-ostree's vocabulary on an ostree-compatible sysroot.

On a running device the sysroot is found automatically; offline, pass ``--sysroot DIR``.
Exit code 77 means "nothing to do" (as rpm-ostree's ``--unchanged-exit-77``/``--check``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

EXIT_UNCHANGED = 77


def _sysroot_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sysroot", help="sysroot directory (default: the running device)")
    p.add_argument("--os", "--osname", dest="osname", help="stateroot (default: booted)")


def register(sub: Any) -> None:
    dev = sub.add_parser("device", help="deployments, upgrades, rollback, health checks")
    verbs = dev.add_subparsers(dest="verb", metavar="VERB")

    p = verbs.add_parser("install", help="init-fs, os-init, remote add, pull, first deploy")
    p.add_argument("--sysroot", required=True)
    p.add_argument("--osname", required=True)
    p.add_argument("--url", required=True, help="repo URL (http://, file://) or path")
    p.add_argument("--ref", required=True)
    p.add_argument("--remote", default="origin")
    p.add_argument("--karg", action="append", default=None, help="kernel argument")
    p.add_argument("--provision", metavar="FILE", help="per-device settings (TOML: hostname, "
                   "[vrrp], [app]) written into the deployment's /etc (docs/workloads.md)")
    p.add_argument("--ignition", metavar="FILE", help="Ignition config (spec 3.x) the device "
                   "applies once on first boot (docs/provisioning.md)")
    p.set_defaults(func=cmd_install)

    p = verbs.add_parser("status", help="deployments in boot order")
    _sysroot_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_status)

    p = verbs.add_parser("upgrade", help="fetch and deploy (stage) the newest commit")
    _sysroot_arg(p)
    p.add_argument("--check", action="store_true", help="only check (exit 77 if none)")
    p.add_argument("--download-only", action="store_true")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=cmd_upgrade)

    _register_changes(verbs)
    _register_device_side(verbs)
    dev.set_defaults(func=lambda a: (dev.print_help(), 2)[1])


def _register_changes(verbs: Any) -> None:
    p = verbs.add_parser("deploy", help="deploy a given commit")
    _sysroot_arg(p)
    p.add_argument("rev")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=cmd_deploy)

    p = verbs.add_parser("rebase", help="switch to another [REMOTE:]REF")
    _sysroot_arg(p)
    p.add_argument("refspec")
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=cmd_rebase)

    p = verbs.add_parser("rollback", help="make the previous deployment the default")
    _sysroot_arg(p)
    p.add_argument("-r", "--reboot", action="store_true")
    p.set_defaults(func=cmd_rollback)

    p = verbs.add_parser("cleanup", help="remove deployments / unreferenced data")
    _sysroot_arg(p)
    p.add_argument("-p", "--pending", action="store_true")
    p.add_argument("-r", "--rollback", action="store_true")
    p.set_defaults(func=cmd_cleanup)

    p = verbs.add_parser("undeploy", help="remove the deployment at INDEX (ostree admin undeploy)")
    _sysroot_arg(p)
    p.add_argument("index", type=int)
    p.set_defaults(func=cmd_undeploy)

    p = verbs.add_parser("pin", help="keep a deployment (never garbage-collected)")
    _sysroot_arg(p)
    p.add_argument("index", type=int)
    p.add_argument("-u", "--unpin", action="store_true")
    p.set_defaults(func=cmd_pin)



def _register_device_side(verbs: Any) -> None:
    """Verbs the image's units run, and the nspawn bootloader."""
    p = verbs.add_parser("boot", help="boot the sysroot under systemd-nspawn (bootloader)")
    p.add_argument("--sysroot", required=True)
    p.add_argument("--max-boots", type=int, default=6)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per boot")
    p.add_argument("--console", action="store_true", help="print the console output")
    p.set_defaults(func=cmd_boot)

    p = verbs.add_parser("health-check", help="run greenboot checks and act (boot unit)")
    _sysroot_arg(p)
    p.add_argument("--no-reboot", action="store_true")
    p.add_argument("--phase", default="all",
                   choices=("all", "check", "success", "green", "red", "reboot", "status"),
                   help="one greenboot unit's part (default: all of them, in order)")
    p.set_defaults(func=cmd_health)

    p = verbs.add_parser("finalize-staged", help="apply the staged deployment (shutdown unit)")
    _sysroot_arg(p)
    p.set_defaults(func=cmd_finalize)

    p = verbs.add_parser("agent", help="update agent (policy from /etc/atomicedge/agent.toml)")
    _sysroot_arg(p)
    p.add_argument("--once", action="store_true", required=True)
    p.add_argument("--config", help="agent.toml (default /etc/atomicedge/agent.toml)")
    p.add_argument("--no-reboot", action="store_true")
    p.add_argument("--apply", action="store_true",
                   help="the apply timer's run: reboot into a staged update ([apply] schedule)")
    p.set_defaults(func=cmd_agent)

    p = verbs.add_parser("agent-generator", help="systemd generator: agent.toml -> timer drop-ins")
    p.add_argument("outdir", nargs="+")
    p.set_defaults(func=cmd_generator)


def _open(args: argparse.Namespace) -> Any:
    from atomicedge.device import ops
    sysroot = ops.open_sysroot(args.sysroot)
    return sysroot, ops.pick_osname(sysroot, getattr(args, "osname", None))


def _reboot_if(args: argparse.Namespace, sysroot: Any) -> None:
    from atomicedge import runner
    if getattr(args, "reboot", False) and sysroot.booted() is not None:
        runner.run(["systemctl", "reboot"], what="systemctl reboot", check=False, timeout=120)


def _started_finalize(result: Any) -> None:
    """A staged deployment needs the finalize unit active so its ExecStop runs."""
    from atomicedge import runner
    if result.staged:
        runner.run(["systemctl", "start", "atomicedge-finalize-staged.service"],
                   what="systemctl start atomicedge-finalize-staged.service", check=False,
                   timeout=120)


def cmd_install(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    from atomicedge.device.sysroot import Sysroot
    from atomicedge.workload import provision
    prov = provision.load(Path(args.provision)) if args.provision else None  # before writing
    ign = _read_ignition(Path(args.ignition)) if args.ignition else None
    d = ops.install(Path(args.sysroot), args.osname, args.url, args.ref, args.remote,
                    args.karg)
    print(f"Installed {d.id} from {args.remote}:{args.ref}")
    if prov is not None:
        etc = Sysroot.open(Path(args.sysroot)).deployment_dir(d) / "etc"
        for path in provision.apply(prov, etc):
            print(f"Provisioned /etc/{path.relative_to(etc)}")
    if ign is not None:
        from atomicedge.device import ignition
        from atomicedge.fsutil import atomic_write
        dest = Sysroot.open(Path(args.sysroot)).deployment_dir(d) / ignition.PROVISIONED
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, ign, mode=0o600)
        print(f"Provisioned /{ignition.PROVISIONED} (applied on first boot)")
    return 0


def _read_ignition(path: Path) -> bytes:
    """The config checked (JSON, spec version, supported sections) before anything is written."""
    from atomicedge.device import ignition
    found = ignition.find_config(Path("/"), path)
    assert found is not None  # an explicit path either exists or raised
    ignition.parse(found[0], str(path))
    return found[0]


def cmd_status(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    sysroot, _os = _open(args)
    st = ops.status(sysroot)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        sys.stdout.write(ops.format_status(st, args.verbose))
    return 0


def _result(args: argparse.Namespace, sysroot: Any, res: Any) -> int:
    print(res.message)
    if not res.changed:
        return EXIT_UNCHANGED
    _started_finalize(res)
    _reboot_if(args, sysroot)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    sysroot, osname = _open(args)
    res = ops.upgrade(sysroot, osname, check=args.check, download_only=args.download_only)
    if args.check and res.changed:
        print(res.message)
        return 0
    return _result(args, sysroot, res)


def cmd_deploy(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    sysroot, osname = _open(args)
    return _result(args, sysroot, ops.deploy_rev(sysroot, osname, args.rev))


def cmd_rebase(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    sysroot, osname = _open(args)
    return _result(args, sysroot, ops.rebase(sysroot, osname, args.refspec))


def cmd_rollback(args: argparse.Namespace) -> int:
    from atomicedge.device import deploy
    sysroot, _os = _open(args)
    new = deploy.rollback(sysroot)
    print(f"Moving {new[0].id} to be the first deployment")
    _reboot_if(args, sysroot)
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    sysroot, _os = _open(args)
    res = ops.cleanup(sysroot, pending=args.pending, rollback=args.rollback)
    print(f"Removed {res['deployments']} deployment(s), {res['objects']} object(s)")
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    from atomicedge.device import deploy
    sysroot, _os = _open(args)
    deploy.undeploy(sysroot, args.index)
    print(f"Deleted deployment at index {args.index}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    from atomicedge.device import deploy
    sysroot, _os = _open(args)
    d = deploy.set_pinned(sysroot, args.index, not args.unpin)
    print(f"Deployment {d.id} is now {'unpinned' if args.unpin else 'pinned'}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from atomicedge.device.sysroot import Sysroot
    from atomicedge.lab import nspawn
    sysroot = Sysroot.open(args.sysroot)

    def show(rec: nspawn.BootRecord) -> None:
        if args.console:
            sys.stdout.write(rec.console)
        print(f"boot {rec.number}: entry {rec.entry_index} ({rec.deployment}) "
              f"grubenv={rec.grubenv} -> {'reboot' if rec.rc == nspawn.REBOOT_RC else 'off'}"
              f" [{rec.seconds:.1f}s]")
    nspawn.run(sysroot, args.max_boots, args.timeout, on_boot=show)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from atomicedge.device import ops
    from atomicedge.health import service
    sysroot = ops.open_sysroot(args.sysroot)
    # the unit's StandardOutput=journal+console puts these lines in the journal and on the
    # console, as greenboot's do
    ok = service.run_phase(args.phase, sysroot, reboot=not args.no_reboot,
                           log=lambda m: print(m, flush=True))
    return 0 if ok else 1


def cmd_finalize(args: argparse.Namespace) -> int:
    from atomicedge.device import deploy, ops
    sysroot = ops.open_sysroot(args.sysroot)
    d = deploy.finalize(sysroot)
    print(f"Finalized staged deployment {d.id}" if d else "No staged deployment")
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from atomicedge.device import agent
    sysroot, _os = _open(args)
    if args.config:
        cfg = agent.parse_config(Path(args.config).read_text(), args.config)
    else:
        cfg = agent.load_config()
    if args.apply:
        go, _reason = agent.apply_tick(sysroot, cfg, dt.datetime.now(dt.UTC),
                                       reboot=not args.no_reboot,
                                       log=lambda m: print(m, flush=True))
        return 0 if go else EXIT_UNCHANGED
    d = agent.tick(sysroot, cfg, dt.datetime.now(dt.UTC), reboot=not args.no_reboot)
    print(f"agent: {d.action.value}: {d.reason}")
    return 0 if d.action.value != "nothing" else EXIT_UNCHANGED


def cmd_generator(args: argparse.Namespace) -> int:
    from atomicedge.device import agent
    try:
        cfg = agent.load_config()
    except Exception as exc:  # a bad config must not break the boot: keep unit defaults
        print(f"atomicedge-generator: {exc}", file=sys.stderr)
        return 0
    agent.write_generator(Path(args.outdir[0]), cfg)
    return 0
