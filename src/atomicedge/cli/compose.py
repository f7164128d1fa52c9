"""CLI of the image builder: ``compose build``, ``blueprints validate|depsolve``, ``packages
search`` and the ``repo packages`` verb (package list / diff of commits).

Handlers only translate arguments into library calls (atomicedge.compose.*) and print; every
error is a typed exception that main() turns into one ``error:`` message and an exit code.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from atomicedge.compose import artifact, container, pkgdb
from atomicedge.compose import build as build_mod
from atomicedge.compose import depsolve as ds
from atomicedge.compose.apt import AptState, Sources, host_arch
from atomicedge.compose.blueprint import DEFAULT_DISTRO, DISTROS
from atomicedge.compose.cache import default_root
from atomicedge.compose.validate import load
from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree.repo import Repo

INSTALLER = "edge-installer"    # compose/installer.py (imported when used: xorriso, GRUB)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class RichSteps(build_mod.Steps):
    """Each compose step named and timed on the terminal."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def started(self, name: str) -> None:
        self.console.print(f"[dim]…[/dim] {name}")

    def finished(self, name: str, seconds: float) -> None:
        self.console.print(f"[green]✓[/green] {name} [dim]{seconds:.2f} s[/dim]")

    def note(self, text: str) -> None:
        self.console.print(f"[cyan]•[/cyan] {text}")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mirror", metavar="URL", help="Debian mirror (default: the machine's sources)")
    g.add_argument("--offline-repo", metavar="DIR", type=Path,
                   help="flat local apt repository (Packages + Release), no network")
    p.add_argument("--profile", default="edge", choices=ds.PROFILES,
                   help="edge (bootable, default) or test (minbase only, not bootable)")


def sources_from_args(args: argparse.Namespace, distro: str = DEFAULT_DISTRO) -> Sources:
    if getattr(args, "offline_repo", None):
        if not args.offline_repo.is_dir():
            raise NotFoundError(f"--offline-repo {args.offline_repo} is not a directory")
        return Sources.offline(args.offline_repo)
    if getattr(args, "mirror", None):
        return Sources.mirror(args.mirror, DISTROS[distro][0])
    return Sources.host()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compose", help="build images from blueprints")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    b = verbs.add_parser("build", help="blueprint -> OSTree commit (edge-commit)")
    b.add_argument("blueprint", type=Path, metavar="BLUEPRINT.toml")
    b.add_argument("--type", dest="image_type", default="edge-commit",
                   choices=build_mod.IMAGE_TYPES + build_mod.DISK_TYPES + (INSTALLER,),
                   help="edge-commit (tar of repo/ + compose.json), edge-container (OCI "
                        "archive serving the repo on port 8080), qcow2 or edge-raw-image "
                        "(disk booting BIOS and UEFI with GRUB), edge-installer (ISO "
                        "installing the commit unattended from a kickstart)")
    b.add_argument("--repo", type=Path, help="OSTree repo to commit into (created if missing)")
    b.add_argument("--ref", help="branch (default debian/12/<arch>/edge)")
    pg = b.add_mutually_exclusive_group()
    pg.add_argument("--parent", metavar="COMMIT", help="parent commit or ref")
    pg.add_argument("--url", metavar="URL", help="repo whose refs/heads/<ref> is the parent")
    b.add_argument("--output", type=Path, metavar="FILE.tar",
                   help="write the artifact (edge-commit tar or edge-container OCI archive)")
    b.add_argument("--push", metavar="docker://HOST:PORT/NAME:TAG",
                   help="edge-container: push the image to this registry")
    b.add_argument("--tls-verify", default="true", choices=("true", "false"),
                   help="--push: verify the registry's TLS certificate (false: plain HTTP)")
    b.add_argument("--no-cache", action="store_true", help="rebuild the package tree")
    b.add_argument("--update-url", metavar="URL",
                   help="qcow2/edge-raw-image: the device's update remote (default: --url, "
                        "else http://10.0.2.2:8080, the host as QEMU's user network sees it)")
    b.add_argument("--dhcp", action="store_true",
                   help="qcow2/edge-raw-image: DHCP with systemd-networkd when the commit has "
                        "no network setup (see docs/booting.md: slow to start on TCG)")
    b.add_argument("--vm-agent", action="store_true",
                   help="qcow2/edge-raw-image: add the command channel of `atomicedge vm exec`")
    b.add_argument("--kickstart", type=Path, metavar="KS",
                   help="edge-installer: the kickstart the ISO carries (default: ostreesetup "
                        "of the commit with --update-url as the remote, clearpart --all, "
                        "poweroff); replace it later with `atomicedge mkksiso`")
    _add_source_args(b)
    b.set_defaults(func=cmd_build)

    k = sub.add_parser("mkksiso", help="embed a kickstart into an edge-installer ISO")
    k.add_argument("kickstart", type=Path, metavar="KS", help="the kickstart (checked first)")
    k.add_argument("iso", type=Path, metavar="ISO", help="an edge-installer ISO")
    k.add_argument("output", type=Path, metavar="OUT", help="the new ISO (may be ISO itself)")
    k.set_defaults(func=cmd_mkksiso)

    p = sub.add_parser("blueprints", help="check blueprints")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    v = verbs.add_parser("validate", help="validate blueprint files (no network)")
    v.add_argument("files", nargs="+", type=Path, metavar="FILE")
    v.set_defaults(func=cmd_validate)
    d = verbs.add_parser("depsolve", help="list the packages a blueprint resolves to")
    d.add_argument("file", type=Path, metavar="FILE")
    d.add_argument("--json", action="store_true")
    _add_source_args(d)
    d.set_defaults(func=cmd_depsolve)

    p = sub.add_parser("packages", help="search the package sources")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    s = verbs.add_parser("search", help="packages whose name matches (glob or substring)")
    s.add_argument("name")
    _add_source_args(s)
    s.set_defaults(func=cmd_search)


def register_repo_verbs(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("packages", help="list packages of a commit, or --diff two commits")
    p.add_argument("--repo", required=True, type=Path, metavar="PATH", help="repository directory")
    p.add_argument("rev", nargs="?", metavar="REV")
    p.add_argument("--diff", nargs=2, metavar=("A", "B"), help="added/removed/upgraded A -> B")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_repo_packages)


def _check_repo_path(path: Path) -> None:
    """The repo is opened, or created after depsolve, by the build; refuse a foreign dir now."""
    if not (path / "config").exists() and path.exists() and any(path.iterdir()):
        raise UsageError(f"{path} exists and is not an OSTree repository",
                         "pass an empty or new directory")


def cmd_build(args: argparse.Namespace) -> int:
    bp = load(args.blueprint)
    sources = sources_from_args(args, bp.distro)
    if args.kickstart is not None:
        _check_kickstart_early(args, bp)
    if args.push:
        if args.image_type != "edge-container":
            raise UsageError("--push needs --type edge-container", "only containers go to "
                             "a registry; serve an edge-commit's repo/ over HTTP instead")
        container.check_destination(args.push)
    tmp = tempfile.TemporaryDirectory(prefix="atomicedge-compose-")
    repo_path = args.repo or Path(tmp.name) / "repo"
    # without --repo the artifact is the result (default name) unless it only goes to --push
    keep = args.output is not None or (args.repo is None and not args.push)
    suffix = {"qcow2": ".qcow2", "edge-raw-image": ".raw", INSTALLER: ".iso"}.get(
        args.image_type, ".tar")
    output = args.output or (Path(f"{bp.name}-{bp.version}-{args.image_type}{suffix}") if keep
                             else Path(tmp.name) / "image.tar" if args.push else None)
    try:
        _check_repo_path(repo_path)
        req = build_mod.ComposeRequest(
            bp, repo_path, sources, ref=args.ref, parent=args.parent, url=args.url,
            profile=args.profile, use_cache=not args.no_cache,
            # the installer ISO embeds the commit an edge-commit compose makes
            image_type="edge-commit" if args.image_type == INSTALLER else args.image_type)
        steps = RichSteps(err)
        res = build_mod.compose(req, steps)
        repo = Repo.open(repo_path)
        if output:
            with steps.step(f"{args.image_type} artifact"):
                if args.image_type in build_mod.DISK_TYPES:
                    _write_disk(args, repo, res.ref, res.commit, output)
                elif args.image_type == INSTALLER:
                    _write_installer(args, repo, res.ref, res.commit, output)
                else:
                    artifact.write_image(args.image_type, repo, res.ref, res.commit, output,
                                         state=AptState(sources, default_root(), host_arch()),
                                         cache_root=default_root(),
                                         name=f"{bp.name}:{bp.version}")
        if args.push and output is not None:
            with steps.step(f"push {args.push}"):
                container.push(output, args.push, tls_verify=args.tls_verify == "true")
    finally:
        tmp.cleanup()
    print(f"commit {res.commit}")
    out.print(f"ref {res.ref}  version {bp.version}  packages {res.packages}  "
              f"root tree {res.root_tree[:12]}  tree cache {'hit' if res.tree_cached else 'miss'}")
    if output and keep:
        print(f"artifact {output}")
    if args.push:
        print(f"pushed {args.push}")
    return 0


def _write_disk(args: argparse.Namespace, repo: Repo, ref: str, commit: str,
                output: Path) -> None:
    from atomicedge.compose import disk
    disk.build(disk.DiskSpec(repo.path, ref, commit, output, args.image_type,
                             update_url=args.update_url or args.url or disk.DEFAULT_UPDATE_URL,
                             kargs=disk.kargs_of(repo, commit), agent=args.vm_agent,
                             dhcp=args.dhcp))


def _check_kickstart_early(args: argparse.Namespace, bp: Any) -> None:
    """--kickstart: refused with its line before the compose writes anything."""
    from atomicedge.compose import kickstart
    if args.image_type != INSTALLER:
        raise UsageError("--kickstart needs --type edge-installer")
    ks = kickstart.parse_file(args.kickstart)
    ref = args.ref or build_mod.default_ref(bp, host_arch())
    if ks.ostree.ref != ref:
        raise UsageError(f"{args.kickstart.name}:{ks.ostree.line}: ostreesetup "
                         f"--ref={ks.ostree.ref}: the commit goes to {ref}",
                         f"use --ref={ref} in the kickstart (or --ref for the compose)")


def _write_installer(args: argparse.Namespace, repo: Repo, ref: str, commit: str,
                     output: Path) -> None:
    from atomicedge.compose import disk, installer
    installer.build(installer.InstallerSpec(
        repo.path, ref, commit, output, kickstart=args.kickstart,
        update_url=args.update_url or args.url or disk.DEFAULT_UPDATE_URL))


def cmd_mkksiso(args: argparse.Namespace) -> int:
    from atomicedge.compose import installer
    plan = installer.mkksiso(args.kickstart, args.iso, args.output)
    users = ", ".join(u["name"] for u in plan.users) or "none"
    print(f"{args.output}: kickstart {args.kickstart.name} embedded (ostreesetup "
          f"--osname={plan.osname} --remote={plan.remote} --url={plan.url} --ref={plan.ref}; "
          f"users: {users}; %post scripts: {len(plan.posts)}; then {plan.finish})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    for path in args.files:
        bp = load(path)
        print(f"{path}: ok ({bp.name} {bp.version}, {len(bp.packages)} packages)")
    return 0


def cmd_depsolve(args: argparse.Namespace) -> int:
    bp = load(args.file)
    state = AptState(sources_from_args(args, bp.distro), default_root(), host_arch())
    res = ds.depsolve(bp, state, args.profile)
    if args.json:
        out.print_json(json.dumps({"blueprint": bp.name, "packages": [
            {"name": n, "version": v, "arch": a} for n, v, a in res.packages]}))
        return 0
    for name, version, arch in res.packages:
        print(f"{name}\t{version}\t{arch}")
    err.print(f"[dim]{len(res.packages)} packages[/dim]")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    state = AptState(sources_from_args(args), default_root(), host_arch())
    found = ds.search(state, args.name)
    if not found:
        raise NotFoundError(f"no package matches {args.name!r}", "try a shorter name or a glob")
    for name, version, summary in found:
        print(f"{name}\t{version}\t{summary}")
    return 0


def cmd_repo_packages(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    if args.diff:
        d = pkgdb.diff(pkgdb.packages(repo, args.diff[0]), pkgdb.packages(repo, args.diff[1]))
        if args.json:
            out.print_json(json.dumps({
                "added": [p.__dict__ for p in d.added], "removed": [p.__dict__ for p in d.removed],
                "upgraded": [{"name": a.name, "from": a.version, "to": b.version}
                             for a, b in d.upgraded]}))
            return 0
        for line in pkgdb.diff_lines(d):
            out.print(line)
        err.print(f"[dim]{len(d.added)} added, {len(d.removed)} removed, "
                  f"{len(d.upgraded)} upgraded[/dim]")
        return 0
    if not args.rev:
        raise UsageError("repo packages needs REV or --diff A B")
    pkgs = pkgdb.packages(repo, args.rev)
    if args.json:
        out.print_json(json.dumps([p.__dict__ for p in sorted(pkgs.values())]))
        return 0
    for p in sorted(pkgs.values()):
        print(f"{p.name}\t{p.version}\t{p.arch}")
    return 0
