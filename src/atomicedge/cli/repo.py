"""``atomicedge repo VERB --repo PATH ...``: ostree's verbs and flags, so scripts port by
replacing ``ostree`` with ``atomicedge repo``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from atomicedge.errors import UsageError
from atomicedge.ostree import inspect as ins
from atomicedge.ostree.checkout import checkout
from atomicedge.ostree.commit import commit_directory, parse_metadata_strings, parse_timestamp
from atomicedge.ostree.fsck import fsck, prune
from atomicedge.ostree.repo import Repo

# modules that add verbs of their own (network, packages) through register_repo_verbs()
EXTENSIONS = ("atomicedge.cli.repo_net", "atomicedge.cli.compose")

err = Console(stderr=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("repo", help="OSTree-format repository (ostree's verbs)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    _add_basic_verbs(verbs)
    _add_read_verbs(verbs)
    if _requested_verb() in verbs.choices:
        return  # one of ours: the extensions' imports would only slow start-up down
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        hook = getattr(module, "register_repo_verbs", None)
        if hook:
            hook(verbs)


def _requested_verb() -> str | None:
    from atomicedge.cli.main import CURRENT_ARGV
    words = [a for a in CURRENT_ARGV if not a.startswith("-")]
    return words[1] if len(words) > 1 and words[0] == "repo" else None


def add_repo_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, metavar="PATH", help="repository directory")


def _add_basic_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("init", help="create a repository")
    add_repo_arg(p)
    p.add_argument("--mode", default="bare", help="archive | bare | bare-user (default bare)")
    p.add_argument("--collection-id")
    p.set_defaults(func=cmd_init)

    p = verbs.add_parser("commit", help="commit a directory tree")
    add_repo_arg(p)
    p.add_argument("-b", "--branch")
    p.add_argument("-s", "--subject", default="")
    p.add_argument("-m", "--body", default="")
    p.add_argument("--parent", help="parent commit, or 'none'")
    p.add_argument("--orphan", action="store_true", help="same as --parent=none")
    p.add_argument("--timestamp", help="@EPOCH or ISO 8601")
    p.add_argument("--add-metadata-string", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--generate-sizes", action="store_true")
    p.add_argument("--no-xattrs", action="store_true")
    p.add_argument("--bootable", action="store_true")
    p.add_argument("--skip-special", action="store_true",
                   help="leave out device nodes, sockets and fifos instead of failing")
    p.add_argument("--no-bindings", action="store_true")
    p.add_argument("--tree", help="dir=PATH (ostree syntax)")
    p.add_argument("path", nargs="?")
    p.set_defaults(func=cmd_commit)

    p = verbs.add_parser("checkout", help="check a commit out into a directory")
    add_repo_arg(p)
    p.add_argument("-U", "--user-mode", action="store_true")
    p.add_argument("--subpath")
    p.add_argument("--union", action="store_true")
    p.add_argument("rev")
    p.add_argument("dest")
    p.set_defaults(func=cmd_checkout)

    p = verbs.add_parser("refs", help="list, create or delete refs")
    add_repo_arg(p)
    p.add_argument("--create", metavar="NEWREF")
    p.add_argument("--delete", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("args", nargs="*", metavar="PREFIX|REV")
    p.set_defaults(func=cmd_refs)

    p = verbs.add_parser("fsck", help="verify every object")
    add_repo_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fsck)

    p = verbs.add_parser("prune", help="delete unreachable objects")
    add_repo_arg(p)
    p.add_argument("--refs-only", action="store_true", default=True)
    p.add_argument("--no-prune", "--dry-run", dest="dry_run", action="store_true")
    p.set_defaults(func=cmd_prune)


def _add_read_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("log", help="history of a ref")
    add_repo_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("rev")
    p.set_defaults(func=cmd_log)

    p = verbs.add_parser("show", help="one commit")
    add_repo_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--print-metadata-key", metavar="KEY")
    p.add_argument("rev")
    p.set_defaults(func=cmd_show)

    p = verbs.add_parser("ls", help="list paths of a commit")
    add_repo_arg(p)
    p.add_argument("-R", "--recursive", action="store_true")
    p.add_argument("-C", "--checksum", action="store_true")
    p.add_argument("rev")
    p.add_argument("paths", nargs="*")
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("cat", help="print a file of a commit")
    add_repo_arg(p)
    p.add_argument("rev")
    p.add_argument("path")
    p.set_defaults(func=cmd_cat)

    p = verbs.add_parser("diff", help="added/modified/deleted paths between two commits")
    add_repo_arg(p)
    p.add_argument("rev_a")
    p.add_argument("rev_b", nargs="?")
    p.set_defaults(func=cmd_diff)

    p = verbs.add_parser("rev-parse", help="print the checksum of a revision")
    add_repo_arg(p)
    p.add_argument("rev")
    p.set_defaults(func=cmd_rev_parse)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def cmd_init(args: argparse.Namespace) -> int:
    Repo.init(args.repo, args.mode, args.collection_id)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    src = args.path
    if args.tree:
        kind, _, value = args.tree.partition("=")
        if kind != "dir" or not value:
            raise UsageError(f"--tree={args.tree} is not supported", "use --tree=dir=PATH")
        src = value
    if not src:
        raise UsageError("no directory to commit", "pass a path or --tree=dir=PATH")
    repo = Repo.open(args.repo)
    parent = "none" if args.orphan else args.parent
    ts = parse_timestamp(args.timestamp) if args.timestamp else None
    with Progress(TextColumn("[bold]commit"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("scanning", total=None)

        def progress(files: int, size: int) -> None:
            bar.update(task, description=f"{files} files, {size / 1e6:.1f} MB")

        csum = commit_directory(repo, src, branch=args.branch, subject=args.subject,
                                body=args.body, parent=parent, timestamp=ts,
                                metadata=parse_metadata_strings(args.add_metadata_string,
                                                                "--add-metadata-string"),
                                bootable=args.bootable, generate_sizes=args.generate_sizes,
                                xattrs=not args.no_xattrs, skip_special=args.skip_special,
                                bind_ref=not args.no_bindings, progress=progress)
    print(csum)
    return 0


def cmd_checkout(args: argparse.Namespace) -> int:
    checkout(Repo.open(args.repo), args.rev, args.dest, user_mode=args.user_mode,
             subpath=args.subpath, union=args.union)
    return 0


def cmd_refs(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    if args.create:
        if len(args.args) != 1:
            raise UsageError("--create=NEWREF needs exactly one existing revision")
        if repo.read_ref(args.create) and not args.force:
            raise UsageError(f"ref {args.create} already exists", "pass --force to move it")
        repo.set_ref(args.create, repo.resolve_rev(args.args[0]))
        return 0
    if args.delete:
        if not args.args:
            raise UsageError("--delete needs the refs to delete")
        for ref in args.args:
            repo.set_ref(ref, None)
        return 0
    refs = repo.list_refs(args.args[0] if args.args else None)
    if args.json:
        _print_json(refs)
    else:
        for name in refs:
            print(name)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    entries = list(ins.history(repo, args.rev))
    if args.json:
        _print_json([ins.commit_json(repo, c, commit) for c, commit in entries])
    else:
        sys.stdout.write("\n".join(ins.format_commit(c, commit) for c, commit in entries))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    csum = repo.resolve_rev(args.rev)
    commit = repo.load_commit(csum)
    if args.print_metadata_key:
        if args.print_metadata_key not in commit.metadata:
            raise UsageError(f"commit {csum} has no metadata key {args.print_metadata_key!r}")
        value = ins.plain(commit.metadata[args.print_metadata_key])
        print(json.dumps(value) if not isinstance(value, str) else repr(value))
    elif args.json:
        _print_json(ins.commit_json(repo, csum, commit))
    else:
        sys.stdout.write(ins.format_commit(csum, commit))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    for path in args.paths or ["/"]:
        for entry in ins.ls(repo, args.rev, path, args.recursive):
            print(entry.render(args.checksum))
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    data = ins.cat(Repo.open(args.repo), args.rev, args.path)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    a, b = (args.rev_a, args.rev_b) if args.rev_b else (args.rev_a + "^", args.rev_a)
    sys.stdout.write(ins.diff(repo, a, b).render())
    return 0


def cmd_rev_parse(args: argparse.Namespace) -> int:
    print(Repo.open(args.repo).resolve_rev(args.rev))
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    repo = Repo.open(args.repo)
    report = fsck(repo)
    if args.json:
        _print_json(report.as_dict())
    else:
        for csum, kind, why in report.corrupt:
            print(f"error: corrupted object {csum}.{kind}: {why}", file=sys.stderr)
        for csum, kind, needed in report.missing:
            print(f"error: missing object {csum}.{kind} (needed by {needed})", file=sys.stderr)
        for csum in report.partial:
            print(f"note: commit {csum} is partial; its tree was not checked")
        status = "no errors found" if report.ok else (
            f"{len(report.corrupt)} corrupted, {len(report.missing)} missing")
        print(f"fsck of {report.objects} objects in {report.commits} commits: {status}")
    return 0 if report.ok else 1


def cmd_prune(args: argparse.Namespace) -> int:
    res = prune(Repo.open(args.repo), refs_only=True, dry_run=args.dry_run)
    verb = "Would delete" if args.dry_run else "Deleted"
    print(f"Total objects: {res.total}")
    print(f"{verb} {res.deleted} objects, {res.freed_bytes} bytes freed")
    return 0
