"""``atomicedge composer``: the composer service (``serve``, ``worker``) and a composer-cli
compatible client (``blueprints``, ``compose``, ``projects``, ``sources``, ``status``).

Client verbs print what composer-cli prints; API errors are ``ERROR: ID: message`` lines on
stderr with exit code 1; ``--json`` prints the raw API exchanges instead (composer-cli's
``[{method, path, status, body}]``). ``compose start --wait`` draws a live progress bar.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomicedge.cli.compose import _add_source_args, sources_from_args
from atomicedge.composer.client import ApiError, Client
from atomicedge.errors import UsageError

Handler = Callable[[argparse.Namespace, Client], int]


def _duration(text: str) -> float:
    """Go-style durations: ``5m``, ``10s``, ``1h30m``, ``500ms``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise UsageError(f"{text!r} is not a duration", "e.g. 5m, 30s, 1h")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _client(args: argparse.Namespace) -> Client:
    token = None
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    return Client(socket=args.socket, url=args.url, token=token, timeout=args.timeout)


def _run(func: Handler) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        client = _client(args)
        quiet = io.StringIO() if args.json else None
        try:
            with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
                rc = func(args, client)
        except ApiError as exc:
            if not args.json:
                for eid, msg in exc.errors:
                    print(f"ERROR: {eid}: {msg}", file=sys.stderr)
            rc = 1
        if args.json:
            print(json.dumps(client.exchanges, indent=4))
        return rc
    return wrapped


def _names(values: list[str]) -> list[str]:
    return [n for v in values for n in v.split(",") if n]


# ---- blueprints ---------------------------------------------------------------------------

def bp_list(args: argparse.Namespace, c: Client) -> int:
    total = c.get("blueprints/list?limit=0")["total"]
    for name in c.get(f"blueprints/list?limit={total}")["blueprints"]:
        print(name)
    return 0


def bp_show(args: argparse.Namespace, c: Client) -> int:
    for name in _names(args.blueprints):
        if args.commit:
            print(c.text(f"blueprints/change/{name}/{args.commit}?format=toml"))
        else:
            print(c.text(f"blueprints/info/{name}?format=toml"))
    return 0


def _push(c: Client, files: list[Path], route: str) -> int:
    rc = 0
    for path in files:
        try:
            body = path.read_bytes()
        except OSError as exc:
            print(f"ERROR: Push TOML: {exc.strerror}: {path}", file=sys.stderr)
            rc = 1
            continue
        ctype = "application/json" if path.suffix == ".json" else "text/x-toml"
        c.call("POST", f"/api/v1/blueprints/{route}", body, ctype)
    return rc


def bp_push(args: argparse.Namespace, c: Client) -> int:
    return _push(c, args.files, "new")


def bp_workspace(args: argparse.Namespace, c: Client) -> int:
    return _push(c, args.files, "workspace")


def bp_delete(args: argparse.Namespace, c: Client) -> int:
    c.call("DELETE", f"/api/v1/blueprints/delete/{args.blueprint}")
    return 0


def bp_tag(args: argparse.Namespace, c: Client) -> int:
    c.call("POST", f"/api/v1/blueprints/tag/{args.blueprint}")
    return 0


def bp_undo(args: argparse.Namespace, c: Client) -> int:
    c.call("POST", f"/api/v1/blueprints/undo/{args.blueprint}/{args.commit}")
    return 0


def bp_changes(args: argparse.Namespace, c: Client) -> int:
    data = c.get(f"blueprints/changes/{','.join(_names(args.blueprints))}?limit=1000")
    for bp in data["blueprints"]:
        print(bp["name"])
        for ch in bp["changes"]:
            rev = f"  revision {ch['revision']}" if ch.get("revision") is not None else ""
            print(f"    {ch['timestamp']}  {ch['commit']}{rev}")
            print(f"    {ch['message']}\n")
    _raise_errors(data)
    return 0


def _raise_errors(data: dict[str, Any]) -> None:
    if data.get("errors"):
        raise ApiError([(e["id"], e["msg"]) for e in data["errors"]])


def _revision(c: Client, name: str, rev: str) -> str:
    if rev == "WORKSPACE":
        return c.text(f"blueprints/info/{name}?format=toml")
    if rev == "NEWEST":
        changes = c.get(f"blueprints/changes/{name}?limit=1")
        _raise_errors(changes)
        rev = changes["blueprints"][0]["changes"][0]["commit"]
    return c.text(f"blueprints/change/{name}/{rev}?format=toml")


def bp_diff(args: argparse.Namespace, c: Client) -> int:
    old = _revision(c, args.blueprint, args.from_commit).splitlines(keepends=True)
    new = _revision(c, args.blueprint, args.to_commit).splitlines(keepends=True)
    sys.stdout.writelines(difflib.unified_diff(
        old, new, f"{args.blueprint}-{args.from_commit}", f"{args.blueprint}-{args.to_commit}"))
    return 0


def _nevra(dep: dict[str, Any]) -> str:
    evr = f"{dep['version']}-{dep['release']}" if dep.get("release") else dep["version"]
    if dep.get("epoch"):
        evr = f"{dep['epoch']}:{evr}"
    return f"{dep['name']}-{evr}.{dep['arch']}"


def bp_depsolve(args: argparse.Namespace, c: Client) -> int:
    data = c.get(f"blueprints/depsolve/{','.join(_names(args.blueprints))}")
    for entry in data["blueprints"]:
        print(f"blueprint: {entry['blueprint']['name']} v{entry['blueprint'].get('version')}")
        for dep in entry["dependencies"]:
            print(f"    {_nevra(dep)}")
    _raise_errors(data)
    return 0


def bp_freeze(args: argparse.Namespace, c: Client) -> int:
    words = list(args.blueprints)
    mode = words.pop(0) if words and words[0] in ("show", "save") else "list"
    names = _names(words)
    if not names:
        raise UsageError("blueprints freeze needs BLUEPRINT,...")
    if mode == "list":
        data = c.get(f"blueprints/freeze/{','.join(names)}")
        for entry in data["blueprints"]:
            bp = entry["blueprint"]
            print(f"blueprint: {bp['name']} v{bp.get('version')}")
            for pkg in bp.get("modules", []) + bp.get("packages", []):
                print(f"    {pkg['name']}-{pkg['version']}")
        _raise_errors(data)
        return 0
    for name in names:
        text = c.text(f"blueprints/freeze/{name}?format=toml")
        if mode == "show":
            print(text)
        else:
            dest = Path(args.filename) if args.filename else Path(f"{name}.frozen.toml")
            dest.write_text(text)
    return 0


# ---- compose ------------------------------------------------------------------------------

def _start(args: argparse.Namespace, c: Client, ostree: dict[str, str] | None) -> int:
    req: dict[str, Any] = {"blueprint_name": args.blueprint, "compose_type": args.type,
                           "branch": "master", "size": args.size * 1024 * 1024}
    if ostree is not None:
        req["ostree"] = ostree
    test = f"?test={args.test}" if args.test else ""
    data = c.call("POST", f"/api/v1/compose{test}", json.dumps(req).encode(),
                  "application/json")
    for warning in data.get("warnings") or []:
        print(f"Warning: {warning}")
    build_id = data["build_id"]
    print(f"Compose {build_id} added to the queue")
    if not args.wait:
        return 0
    return _wait(c, build_id, _duration(args.timeout_wait), _duration(args.poll),
                 bar=not args.json)


def _wait(c: Client, build_id: str, timeout: float, poll: float, *, bar: bool) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    deadline = time.monotonic() + timeout
    console = Console(stderr=True, highlight=False)
    info: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not bar, transient=True) as progress:
        task = progress.add_task("WAITING", total=100)
        while time.monotonic() < deadline:
            info = c.get(f"compose/info/{build_id}")
            state = info["queue_status"]
            prog = info.get("progress") or {}
            done = 100 * prog.get("done", 0) / (prog.get("total") or 1)
            if state == "FINISHED":
                done = 100
            progress.update(task, completed=done,
                            description=f"{state} {prog.get('message', '')}".strip())
            if state in ("FINISHED", "FAILED"):
                break
            time.sleep(poll)
        else:
            print(f"ERROR: Wait: timeout after {timeout:.0f}s", file=sys.stderr)
            return 1
    print(f"{build_id} {info['queue_status']}")
    return 0 if info["queue_status"] == "FINISHED" else 1


def compose_start(args: argparse.Namespace, c: Client) -> int:
    return _start(args, c, None)


def compose_start_ostree(args: argparse.Namespace, c: Client) -> int:
    return _start(args, c, {"ref": args.ref, "parent": args.parent, "url": args.ostree_url})


def _when(entry: dict[str, Any]) -> str:
    stamp = entry.get("job_finished") or entry.get("job_started") or entry.get("job_created")
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(stamp)) if stamp else ""


def compose_status(args: argparse.Namespace, c: Client) -> int:
    rows = [("ID", "Status", "Time", "Blueprint", "Version", "Type", "Size")]
    for e in sorted(c.get("compose/status/*")["uuids"],
                    key=lambda e: e.get("job_created", 0), reverse=True):
        size = str(e["image_size"]) if e.get("image_size") else ""
        rows.append((e["id"], e["queue_status"], _when(e), e["blueprint"], e["version"],
                     e["compose_type"], size))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def compose_info(args: argparse.Namespace, c: Client) -> int:
    info = c.get(f"compose/info/{args.uuid}")
    size = str(info["image_size"]) if info.get("image_size") else ""
    bp = info["blueprint"]
    print(f"{info['id']} {info['queue_status']:<8} {bp['name']:<15} {bp.get('version', '')} "
          f"{info['compose_type']:<16} {size}".rstrip())
    print("Packages:")
    for p in bp.get("packages", []):
        print(f"    {p['name']}-{p.get('version') or '*'}")
    print("Modules:")
    for m in bp.get("modules", []):
        print(f"    {m['name']}-{m.get('version') or '*'}")
    print("Dependencies:")
    for d in info["deps"]["packages"]:
        print(f"    {_nevra(d)}")
    return 0


def compose_log(args: argparse.Namespace, c: Client) -> int:
    size = args.size if args.size is not None else 1024
    print(c.text(f"compose/log/{args.uuid}?size={size}"))
    return 0


def _save(c: Client, route: str, uuid: str, default: str, filename: str | None) -> int:
    dest = Path(filename) if filename else Path(default)
    if dest.is_dir():
        dest = dest / default
    c.download(f"compose/{route}/{uuid}", dest)
    print(dest)
    return 0


def compose_logs(args: argparse.Namespace, c: Client) -> int:
    return _save(c, "logs", args.uuid, f"{args.uuid}-logs.tar", args.filename)


def compose_metadata(args: argparse.Namespace, c: Client) -> int:
    return _save(c, "metadata", args.uuid, f"{args.uuid}-metadata.tar", args.filename)


def compose_results(args: argparse.Namespace, c: Client) -> int:
    return _save(c, "results", args.uuid, f"{args.uuid}.tar", args.filename)


def compose_image(args: argparse.Namespace, c: Client) -> int:
    info = c.get(f"compose/info/{args.uuid}")
    name = {"edge-commit": "commit.tar", "edge-container": "container.tar"}.get(
        info["compose_type"], "image.tar")
    return _save(c, "image", args.uuid, f"{args.uuid}-{name}", args.filename)


def compose_cancel(args: argparse.Namespace, c: Client) -> int:
    c.call("DELETE", f"/api/v1/compose/cancel/{args.uuid}")
    return 0


def compose_delete(args: argparse.Namespace, c: Client) -> int:
    data = c.call("DELETE", f"/api/v1/compose/delete/{','.join(_names(args.uuids))}")
    _raise_errors(data)
    return 0


def compose_types(args: argparse.Namespace, c: Client) -> int:
    for t in sorted(x["name"] for x in c.get("compose/types")["types"]):
        print(t)
    return 0


# ---- projects, sources, status -------------------------------------------------------------

def projects_list(args: argparse.Namespace, c: Client) -> int:
    total = c.get("projects/list?limit=0")["total"]
    for p in c.get(f"projects/list?limit={total}")["projects"]:
        print(f"Name: {p['name']}\n    Summary: {p['summary']}\n    Homepage: {p['homepage']}")
        print(f"    Description: {p['description']}\n\n")
    return 0


def projects_info(args: argparse.Namespace, c: Client) -> int:
    for p in c.get(f"projects/info/{','.join(_names(args.projects))}")["projects"]:
        print(f"Name: {p['name']}\n    Summary: {p['summary']}\n    Homepage: {p['homepage']}")
        print(f"    Description: {p['description']}")
        print("Builds: ")
        for b in p["builds"]:
            ver = f"{b['source']['version']}-{b['release']}" if b["release"] else \
                b["source"]["version"]
            print(f"     {ver}.{b['arch']}")
        print("\n")
    return 0


def sources_list(args: argparse.Namespace, c: Client) -> int:
    for name in c.get("projects/source/list")["sources"]:
        print(name)
    return 0


def status_show(args: argparse.Namespace, c: Client) -> int:
    s = c.call("GET", "/api/status")
    print("API server status:")
    print(f"    Database version:   {s['db_version']}")
    print(f"    Database supported: {str(s['db_supported']).lower()}")
    print(f"    Schema version:     {s['schema_version']}")
    print(f"    API version:        {s['api']}")
    print(f"    Backend:            {s['backend']}")
    print(f"    Build:              {s['build']}")
    for msg in s.get("msgs") or []:
        print(msg)
    return 0


# ---- service -------------------------------------------------------------------------------

def image_types() -> tuple[str, ...]:
    """The builder's image types whose artifact the workers can write."""
    from atomicedge.compose import artifact, build
    if hasattr(artifact, "write_image"):
        return tuple(build.IMAGE_TYPES)
    return ("edge-commit",)


def _serve_options(args: argparse.Namespace, sockets: bool) -> Any:
    from atomicedge.compose.apt import host_arch
    from atomicedge.compose.cache import default_root
    from atomicedge.composer.server import ServeOptions
    low = 0 if sockets else 1
    if not low <= args.workers <= 64:
        raise UsageError(f"--workers {args.workers}: must be {low}..64",
                         "serve --workers 0 runs the API only (remote workers build)")
    return ServeOptions(
        state=args.state, sources=sources_from_args(args), profile=args.profile,
        arch=host_arch(), cache_root=default_root(),
        socket=(None if args.no_socket else args.socket_path) if sockets else None,
        listen=getattr(args, "listen", None), db=args.db, workers=args.workers,
        token_file=getattr(args, "token_file_srv", None), group=getattr(args, "group", None),
        job_timeout=args.job_timeout, image_types=image_types())


def cmd_serve(args: argparse.Namespace) -> int:
    from atomicedge.composer.server import serve
    serve(_serve_options(args, True))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from atomicedge.composer.server import run_worker
    run_worker(_serve_options(args, False))
    return 0


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", type=Path, default=Path("/var/lib/atomicedge-composer"),
                   help="state directory (database, artifacts, job work dirs)")
    p.add_argument("--db", metavar="URL", help="sqlite:///PATH (default: STATE/composer.db) or "
                                               "postgresql://USER@HOST/DB")
    p.add_argument("--workers", type=int, default=1, help="builds at once (default 1)")
    p.add_argument("--job-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="re-queue a running job whose worker is silent this long")
    _add_source_args(p)


def _client_args(p: argparse.ArgumentParser, top: bool) -> None:
    d: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-s", "--socket", help="weldr API socket (default /run/weldr/api.socket)",
                   **({"default": "/run/weldr/api.socket"} if top else d))
    p.add_argument("--server", dest="url", metavar="URL",
                   help="http://HOST:PORT of a TCP listener (needs --token-file)",
                   **({"default": None} if top else d))
    p.add_argument("--token-file", help="file holding the API token for --url",
                   **({"default": None} if top else d))
    p.add_argument("-j", "--json", action="store_true", help="print the raw API exchanges",
                   **({"default": False} if top else d))
    if top:
        p.add_argument("--timeout", type=float, default=240.0,
                       help="HTTP timeout in seconds (0: none)")
    p.add_argument("--test", choices=("1", "2"), help=argparse.SUPPRESS,
                   **({"default": None} if top else d))


def _verb(verbs: argparse._SubParsersAction, name: str, func: Handler, help_text: str,
          common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = verbs.add_parser(name, help=help_text, parents=[common])
    p.set_defaults(func=_run(func))
    return p


def _register_blueprints(groups: argparse._SubParsersAction,
                         common: argparse.ArgumentParser) -> None:
    verbs = groups.add_parser("blueprints", help="manage blueprints").add_subparsers(
        dest="verb", metavar="VERB")
    _verb(verbs, "list", bp_list, "blueprint names", common)
    p = _verb(verbs, "show", bp_show, "blueprints as TOML", common)
    p.add_argument("blueprints", nargs="+", metavar="BLUEPRINT,...")
    p.add_argument("--commit", help="the blueprint at this commit")
    for name, func, text in (("push", bp_push, "push blueprint files (version auto-bumps)"),
                             ("workspace", bp_workspace, "push to the workspace (draft)")):
        _verb(verbs, name, func, text, common).add_argument("files", nargs="+", type=Path,
                                                            metavar="BLUEPRINT.toml")
    for name, func, text in (("delete", bp_delete, "delete a blueprint"),
                             ("tag", bp_tag, "tag the newest change with a revision")):
        _verb(verbs, name, func, text, common).add_argument("blueprint")
    for name, func, text in (("changes", bp_changes, "history, newest first"),
                             ("depsolve", bp_depsolve, "the full package set")):
        _verb(verbs, name, func, text, common).add_argument("blueprints", nargs="+",
                                                            metavar="BLUEPRINT,...")
    p = _verb(verbs, "freeze", bp_freeze, "pin versions ([show|save] BLUEPRINT,...)", common)
    p.add_argument("blueprints", nargs="+", metavar="[show|save] BLUEPRINT,...")
    p.add_argument("--filename", help="for `freeze save`")
    p = _verb(verbs, "undo", bp_undo, "revert to an older commit", common)
    p.add_argument("blueprint")
    p.add_argument("commit")
    p = _verb(verbs, "diff", bp_diff, "diff FROM (commit|NEWEST) TO (commit|NEWEST|WORKSPACE)",
              common)
    p.add_argument("blueprint")
    p.add_argument("from_commit", metavar="FROM")
    p.add_argument("to_commit", metavar="TO")


def _register_compose(groups: argparse._SubParsersAction,
                      common: argparse.ArgumentParser) -> None:
    verbs = groups.add_parser("compose", help="start and manage composes").add_subparsers(
        dest="verb", metavar="VERB")
    for name, func in (("start", compose_start), ("start-ostree", compose_start_ostree)):
        p = _verb(verbs, name, func, "queue a compose of BLUEPRINT as TYPE", common)
        p.add_argument("blueprint")
        p.add_argument("type", metavar="TYPE")
        p.add_argument("--size", type=int, default=0, help="image size in MiB")
        p.add_argument("--wait", action="store_true", help="wait, with a progress bar")
        p.add_argument("--timeout", dest="timeout_wait", default="5m",
                       help="--wait at most this long (default 5m)")
        p.add_argument("--poll", default="2s", help="--wait polling interval (default 2s)")
        if name == "start-ostree":
            p.add_argument("--ref", default="", help="OSTree ref of the new commit")
            p.add_argument("--parent", default="", help="parent ref or commit (needs --url)")
            p.add_argument("--url", dest="ostree_url", default="",
                           help="repo URL the parent is read from")
    _verb(verbs, "status", compose_status, "all composes, newest first", common)
    _verb(verbs, "types", compose_types, "image types", common)
    for name, func, text in (("info", compose_info, "details and packages"),
                             ("cancel", compose_cancel, "cancel a waiting or running compose")):
        _verb(verbs, name, func, text, common).add_argument("uuid", metavar="UUID")
    p = _verb(verbs, "log", compose_log, "the compose log (live while it runs)", common)
    p.add_argument("uuid", metavar="UUID")
    p.add_argument("size", nargs="?", type=int, metavar="KB")
    for name, func, text in (("logs", compose_logs, "download the logs tar"),
                             ("metadata", compose_metadata, "download the metadata tar"),
                             ("results", compose_results, "download metadata+logs+image tar"),
                             ("image", compose_image, "download the image")):
        p = _verb(verbs, name, func, text, common)
        p.add_argument("uuid", metavar="UUID")
        p.add_argument("--filename", help="file or directory to save into")
    p = _verb(verbs, "delete", compose_delete, "delete finished/failed composes", common)
    p.add_argument("uuids", nargs="+", metavar="UUID")


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("composer", help="composer service and composer-cli compatible client")
    _client_args(top, True)
    common = argparse.ArgumentParser(add_help=False)
    _client_args(common, False)
    groups = top.add_subparsers(dest="cgroup", metavar="GROUP")

    s = groups.add_parser("serve", help="run the weldr API server with its workers")
    s.add_argument("--socket", dest="socket_path", type=Path,
                   default=Path("/run/weldr/api.socket"), help="unix socket (mode 0660)")
    s.add_argument("--no-socket", action="store_true", help="TCP only")
    s.add_argument("--listen", metavar="ADDR:PORT", help="also listen on TCP (token required)")
    s.add_argument("--token-file", dest="token_file_srv", type=Path,
                   help="API token for TCP clients (created when missing)")
    s.add_argument("--group", help="group owning the socket (default: weldr when it exists)")
    _service_args(s)
    s.set_defaults(func=cmd_serve)
    w = groups.add_parser("worker", help="run workers only (jobs from a shared database)")
    _service_args(w)
    w.set_defaults(func=cmd_worker)

    _register_blueprints(groups, common)
    _register_compose(groups, common)
    verbs = groups.add_parser("projects", help="packages in the sources").add_subparsers(
        dest="verb", metavar="VERB")
    _verb(verbs, "list", projects_list, "every package", common)
    _verb(verbs, "info", projects_info, "package details", common).add_argument(
        "projects", nargs="+", metavar="PACKAGE,...")
    verbs = groups.add_parser("sources", help="the apt sources builds use").add_subparsers(
        dest="verb", metavar="VERB")
    _verb(verbs, "list", sources_list, "source ids", common)
    verbs = groups.add_parser("status", help="server status").add_subparsers(
        dest="verb", metavar="VERB")
    _verb(verbs, "show", status_show, "API server status", common)
