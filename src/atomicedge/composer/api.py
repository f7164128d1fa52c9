"""The weldr API (v0/v1) of osbuild-composer: status, blueprints, projects, modules, sources,
distros. Compose routes live in :mod:`atomicedge.composer.api_compose`.

Paths, JSON shapes, HTTP codes and error ids follow osbuild-composer's ``internal/weldr``
(including its quirks: an unknown blueprint in ``info`` is an entry in ``errors`` with HTTP 200,
``diff`` only knows NEWEST -> WORKSPACE, unknown routes answer 404 ``HTTPError``). Names in
paths are checked against ``^[a-zA-Z0-9._-]+$`` (``.`` and ``..`` refused too) before anything
else, so no path component ever reaches the file system.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from atomicedge import __version__
from atomicedge.compose.blueprint import DISTROS, BlueprintError
from atomicedge.composer import blueprints as bpmod
from atomicedge.composer.packages import PackageSource, info_json
from atomicedge.composer.queue import Queue
from atomicedge.composer.store import BlueprintStore, StoreError
from atomicedge.errors import AtomicEdgeError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_TYPE = "application/json"


@dataclass
class Context:
    store: BlueprintStore
    queue: Queue
    pkgs: PackageSource
    state: Path
    wakeup: threading.Event
    image_types: tuple[str, ...]


CTX: web.AppKey[Context] = web.AppKey("ctx", Context)


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             content_type=JSON_TYPE, headers={"Cache-Control": "no-store"})


def error(status: int, *errors: tuple[str, str]) -> web.Response:
    out = []
    for eid, msg in errors:
        item: dict[str, Any] = {"id": eid, "msg": msg}
        if eid == "HTTPError" and status == 404:
            item = {"code": 404, **item}
        out.append(item)
    return reply({"status": False, "errors": out}, status)


def not_found() -> web.Response:
    return error(404, ("HTTPError", "Not Found"))


def ok() -> web.Response:
    return reply({"status": True})


def route(min_version: int = 0) -> Callable[[Handler], Handler]:
    """Check ``/api/v{version}``: 0 or 1 (at least ``min_version``), else 404 like composer."""
    def deco(func: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            version = request.match_info.get("version", "")
            if not version.isdigit() or not min_version <= int(version) <= 1:
                return not_found()
            return await func(request)
        wrapped.__name__ = func.__name__
        return wrapped
    return deco


def ctx(request: web.Request) -> Context:
    return request.app[CTX]


def names_param(request: web.Request, key: str) -> list[str] | None:
    raw = request.match_info.get(key, "")
    if key == "rest":
        raw = raw[1:]
    return raw.split(",") if raw else None


def invalid_chars() -> web.Response:
    return error(400, ("InvalidChars", "Invalid characters in API path"))


def offset_limit(request: web.Request) -> tuple[int, int] | web.Response:
    values = []
    for key, default in (("offset", 0), ("limit", 20)):
        text = request.query.get(key, "")
        if text == "":
            values.append(default)
        elif text.isdigit() and int(text) < 2**63:
            values.append(int(text))
        else:
            return error(400, ("BadLimitOrOffset",
                               f"BadRequest: invalid value for '{key}': strconv.ParseUint: "
                               f"parsing {text!r}: invalid syntax"))
    return values[0], values[1]


def check_distro(request: web.Request) -> web.Response | None:
    distro = request.query.get("distro", "")
    if distro and distro not in DISTROS:
        return error(400, ("DistroError", f"Invalid distro: {distro}"))
    arch = request.query.get("arch", "")
    if arch and arch not in (ctx(request).pkgs.arch, _machine(ctx(request).pkgs.arch)):
        return error(400, ("DistroError", f"Invalid distro: {distro or 'debian-12'} has no "
                                          f"repositories for architecture {arch}"))
    return None


def _machine(arch: str) -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


# ---- status, distros ---------------------------------------------------------------------

async def status(request: web.Request) -> web.StreamResponse:
    return reply({"api": "1", "db_supported": True, "db_version": "0", "schema_version": "0",
                  "backend": "osbuild-composer", "build": f"atomicedge-{__version__}",
                  "msgs": []})


@route(1)
async def distros_list(request: web.Request) -> web.StreamResponse:
    return reply({"distros": sorted(DISTROS)})


# ---- blueprints --------------------------------------------------------------------------

@route()
async def bp_list(request: web.Request) -> web.StreamResponse:
    window = offset_limit(request)
    if isinstance(window, web.Response):
        return window
    names = ctx(request).store.names()
    total = len(names)
    offset = min(window[0], total)
    limit = min(window[1], total - offset)
    return reply({"total": total, "offset": offset, "limit": limit,
                  "blueprints": names[offset:offset + limit]})


def _names_or_error(request: web.Request, key: str) -> list[str] | web.Response:
    names = names_param(request, key)
    if not names:
        return not_found()
    if not all(bpmod.valid_name(n) for n in names):
        return invalid_chars()
    return names


def _format(request: web.Request) -> str | web.Response:
    fmt = request.query.get("format", "")
    if fmt not in ("", "json", "toml"):
        return error(400, ("InvalidChars", f"invalid format parameter: {fmt}"))
    return fmt or "json"


def toml_reply(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/x-toml")


@route()
async def bp_info(request: web.Request) -> web.StreamResponse:
    names = _names_or_error(request, "names")
    fmt = _format(request)
    if isinstance(names, web.Response):
        return names
    if isinstance(fmt, web.Response):
        return fmt
    found, changes, errors = [], [], []
    for name in names:
        bp, changed = ctx(request).store.get(name)
        if bp is None:
            errors.append({"id": "UnknownBlueprint", "msg": f"{name}: "})
            continue
        found.append(bpmod.ordered(bp))
        changes.append({"changed": changed, "name": bp["name"]})
    if fmt == "toml":
        if len(found) > 1:
            return error(400, ("HTTPError", "toml format only supported when requesting one "
                                            "blueprint"))
        if errors:
            return error(400, *[(e["id"], e["msg"]) for e in errors])
        return toml_reply(bpmod.to_toml(found[0]))
    return reply({"blueprints": found, "changes": changes, "errors": errors})


@route(1)
async def bp_change(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    commit = request.match_info["commit"]
    if not (bpmod.valid_name(name) and bpmod.valid_name(commit)):
        return invalid_chars()
    fmt = _format(request)
    if isinstance(fmt, web.Response):
        return fmt
    try:
        change = ctx(request).store.change(name, commit)
    except StoreError as exc:
        return error(400, (exc.error_id, exc.msg))
    bp = bpmod.ordered(change.blueprint)
    return toml_reply(bpmod.to_toml(bp)) if fmt == "toml" else reply(bp)


@route()
async def bp_changes(request: web.Request) -> web.StreamResponse:
    names = _names_or_error(request, "names")
    if isinstance(names, web.Response):
        return names
    window = offset_limit(request)
    if isinstance(window, web.Response):
        return window
    out, errors = [], []
    for name in names:
        changes = ctx(request).store.changes(name)
        if changes is None:
            errors.append({"id": "UnknownBlueprint", "msg": name})
            continue
        newest = [c.to_json() for c in reversed(changes)]
        out.append({"changes": newest[window[0]:window[0] + window[1]], "name": name,
                    "total": len(changes)})
    return reply({"blueprints": out, "errors": errors, "limit": window[1],
                  "offset": window[0]})


async def _read_blueprint(request: web.Request) -> dict[str, Any] | web.Response:
    ctype = request.headers.get("Content-Type")
    if not ctype:
        return error(400, ("BlueprintsError", "missing Content-Type header"))
    body = await request.read()
    if not body:
        return error(400, ("BlueprintsError", "Missing blueprint"))
    raw: dict[str, Any] = {}
    try:
        raw = bpmod.initialize(bpmod.decode(body, ctype))
        distro = raw.get("distro") or ""
        if distro and distro not in DISTROS:
            arch = _machine(ctx(request).pkgs.arch)
            return error(400, ("BlueprintsError", f"'{distro}' is not a valid distribution "
                                                  f"(architecture '{arch}')"))
        bpmod.to_model(raw)
        return await asyncio.to_thread(bpmod.hash_passwords, raw)
    except bpmod.BlueprintInputError as exc:
        return error(400, (exc.error_id, exc.msg))
    except BlueprintError as exc:
        text = "; ".join(p.render() for p in exc.problems)
        return error(400, ("BlueprintsError", f"blueprint {raw.get('name')}: {text}"))
    except AtomicEdgeError as exc:
        return error(400, ("BlueprintsError", str(exc)))


@route()
async def bp_new(request: web.Request) -> web.StreamResponse:
    raw = await _read_blueprint(request)
    if isinstance(raw, web.Response):
        return raw
    ctx(request).store.push(raw)
    return ok()


@route()
async def bp_workspace(request: web.Request) -> web.StreamResponse:
    raw = await _read_blueprint(request)
    if isinstance(raw, web.Response):
        return raw
    ctx(request).store.push_workspace(raw)
    return ok()


def _one_name(request: web.Request) -> str | web.Response:
    name = request.match_info["name"]
    return name if bpmod.valid_name(name) else invalid_chars()


async def _store_op(request: web.Request, op: Callable[[str], Any]) -> web.StreamResponse:
    name = _one_name(request)
    if isinstance(name, web.Response):
        return name
    try:
        op(name)
    except StoreError as exc:
        return error(400, (exc.error_id, exc.msg))
    return ok()


@route()
async def bp_delete(request: web.Request) -> web.StreamResponse:
    return await _store_op(request, ctx(request).store.delete)


@route()
async def bp_delete_workspace(request: web.Request) -> web.StreamResponse:
    return await _store_op(request, ctx(request).store.delete_workspace)


@route()
async def bp_tag(request: web.Request) -> web.StreamResponse:
    return await _store_op(request, ctx(request).store.tag)


@route()
async def bp_undo(request: web.Request) -> web.StreamResponse:
    commit = request.match_info["commit"]
    if not bpmod.valid_name(commit):
        return invalid_chars()
    return await _store_op(request, lambda name: ctx(request).store.undo(name, commit))


@route()
async def bp_diff(request: web.Request) -> web.StreamResponse:
    name, frm, to = (request.match_info[k] for k in ("name", "from", "to"))
    if not all(bpmod.valid_name(x) for x in (name, frm, to)):
        return invalid_chars()
    for rev, want in ((frm, "NEWEST"), (to, "WORKSPACE")):
        if rev != want:
            return error(400, ("UnknownCommit", f"ggit-error: revspec '{rev}' not found (-3)"))
    old = ctx(request).store.committed(name)
    new, _ = ctx(request).store.get(name)
    if old is None or new is None:
        return error(404, ("UnknownBlueprint", f"Unknown blueprint name: {name}"))
    return reply({"diff": package_diff(old.get("packages") or [], new.get("packages") or [])})


def package_diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    old_map = {p.get("name"): p for p in old if isinstance(p, dict)}
    diffs: list[dict[str, Any]] = []
    for pkg in new:
        if not isinstance(pkg, dict):
            continue
        prev = old_map.pop(pkg.get("name"), None)
        if prev is None:
            diffs.append({"new": {"Package": pkg}, "old": None})
        elif prev.get("version") != pkg.get("version"):
            diffs.append({"new": {"Package": pkg}, "old": {"Package": prev}})
    diffs += [{"new": None, "old": {"Package": p}} for p in old_map.values()]
    return diffs


@route()
async def bp_depsolve(request: web.Request) -> web.StreamResponse:
    names = _names_or_error(request, "names")
    if isinstance(names, web.Response):
        return names
    out: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        bp, deps = await _solved(request, name, errors)
        if bp is not None:
            out.append({"blueprint": bpmod.ordered(bp), "dependencies": deps or []})
    return reply({"blueprints": out, "errors": errors})


async def _solved(request: web.Request, name: str, errors: list[dict[str, str]]
                  ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """(blueprint, its depsolved packages) of ``name``; what fails is added to ``errors`` and
    is None (the blueprint too when it does not exist)."""
    bp, _ = ctx(request).store.get(name)
    if bp is None:
        errors.append({"id": "UnknownBlueprint", "msg": f"{name}: blueprint not found"})
        return None, None
    try:
        return bp, await asyncio.to_thread(_depsolve, ctx(request), bp)
    except AtomicEdgeError as exc:
        errors.append({"id": "BlueprintsError", "msg": f"{name}: {exc}"})
        return bp, None


def _depsolve(c: Context, bp: dict[str, Any]) -> list[dict[str, Any]]:
    return c.pkgs.depsolve_blueprint(bpmod.to_model(bp))


def freeze(bp: dict[str, Any], deps: list[dict[str, Any]]) -> dict[str, Any]:
    """Globs expanded and versions pinned to what depsolve chose (Debian version strings)."""
    import fnmatch
    by_name = {d["name"]: d for d in deps}
    frozen = dict(bp)
    for key in ("packages", "modules"):
        pinned: dict[str, dict[str, str]] = {}
        for pkg in bp.get(key) or []:
            pattern = pkg.get("name", "")
            for name, dep in by_name.items():
                if name == pattern or fnmatch.fnmatchcase(name, pattern):
                    pinned[name] = {"name": name, "version": debian_version(dep)}
        frozen[key] = [pinned[n] for n in sorted(pinned)]
    return frozen


def debian_version(dep: dict[str, Any]) -> str:
    ver = f"{dep['version']}-{dep['release']}" if dep.get("release") else dep["version"]
    return f"{dep['epoch']}:{ver}" if dep.get("epoch") else ver


@route()
async def bp_freeze(request: web.Request) -> web.StreamResponse:
    names = _names_or_error(request, "names")
    if isinstance(names, web.Response):
        return names
    out: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        bp, deps = await _solved(request, name, errors)
        if bp is None or deps is None:
            break
        out.append({"blueprint": bpmod.ordered(freeze(bp, deps))})
    if request.query.get("format") == "toml":
        if not out:
            return web.Response(text="", content_type="text/x-toml")
        if len(out) > 1:
            return error(400, ("HTTPError", "toml format only supported when requesting one "
                                            "blueprint"))
        return toml_reply(bpmod.to_toml(out[0]["blueprint"]))
    return reply({"blueprints": out, "errors": errors})


# ---- projects and modules ----------------------------------------------------------------

@route()
async def projects_list(request: web.Request) -> web.StreamResponse:
    window = offset_limit(request)
    if isinstance(window, web.Response):
        return window
    bad = check_distro(request)
    if bad:
        return bad
    try:
        pkgs = await asyncio.to_thread(ctx(request).pkgs.search, [])
    except AtomicEdgeError as exc:
        return error(400, ("ProjectsError", f"msg: {exc}"))
    start = min(window[0], len(pkgs))
    page = pkgs[start:start + window[1]]
    return reply({"total": len(pkgs), "offset": window[0], "limit": window[1],
                  "projects": [info_json(p) for p in page]})


@route()
async def modules_list(request: web.Request) -> web.StreamResponse:
    window = offset_limit(request)
    if isinstance(window, web.Response):
        return window
    bad = check_distro(request)
    if bad:
        return bad
    names = names_param(request, "rest") or []
    try:
        pkgs = await asyncio.to_thread(ctx(request).pkgs.search, names)
    except AtomicEdgeError as exc:
        return error(400, ("ModulesError", f"msg: {exc}"))
    if not pkgs:
        return error(400, ("UnknownModule", "No packages have been found."))
    start = min(window[0], len(pkgs))
    n = min(window[1], len(pkgs) - start)
    return reply({"total": len(pkgs), "offset": window[0], "limit": window[1],
                  "modules": [{"name": p.name, "group_type": "rpm"}
                              for p in pkgs[start:start + n]]})


@route()
async def projects_info(request: web.Request) -> web.StreamResponse:
    modules = request.path.startswith(("/api/v0/modules", "/api/v1/modules"))
    err_id, unknown_id = ("ModulesError", "UnknownModule") if modules else \
        ("ProjectsError", "UnknownProject")
    names = names_param(request, "rest")
    if not names:
        return error(400, (unknown_id, "No packages specified."))
    bad = check_distro(request)
    if bad:
        return bad
    try:
        pkgs = await asyncio.to_thread(ctx(request).pkgs.search, names)
        infos = [info_json(p) for p in pkgs]
        if modules:
            for info in infos:
                info["dependencies"] = await asyncio.to_thread(
                    ctx(request).pkgs.depsolve_names, [info["name"]])
    except AtomicEdgeError as exc:
        return error(400, (err_id, f"msg: {exc}"))
    if not infos:
        return error(400, (unknown_id, "No packages have been found."))
    return reply({"modules" if modules else "projects": infos})


@route()
async def projects_depsolve(request: web.Request) -> web.StreamResponse:
    names = names_param(request, "rest")
    if not names:
        return error(400, ("UnknownProject", "No packages specified."))
    bad = check_distro(request)
    if bad:
        return bad
    if not all(bpmod.valid_name(n) for n in names):
        return error(400, ("ProjectsError", "BadRequest: invalid package name"))
    try:
        deps = await asyncio.to_thread(ctx(request).pkgs.depsolve_names, names)
    except AtomicEdgeError as exc:
        return error(400, ("ProjectsError", f"BadRequest: {exc}"))
    return reply({"projects": deps})


# ---- sources (the apt sources the server builds from; read-only) --------------------------

@route()
async def sources_list(request: web.Request) -> web.StreamResponse:
    return reply({"sources": [ctx(request).pkgs.source_id()]})


@route()
async def sources_info(request: web.Request) -> web.StreamResponse:
    ids = names_param(request, "names")
    if not ids:
        return not_found()
    fmt = _format(request)
    if isinstance(fmt, web.Response):
        return fmt
    system = ctx(request).pkgs.source_json()
    found, errors = {}, []
    for sid in ids:
        if sid in ("*", system["id"]):
            found[system["id"]] = system
        else:
            errors.append({"id": "UnknownSource", "msg": f"{sid} is not a valid source"})
    if fmt == "toml":
        return toml_reply(bpmod.to_toml({k: {kk: vv for kk, vv in v.items()}
                                         for k, v in found.items()}))
    return reply({"sources": found, "errors": errors})


@route()
async def sources_new(request: web.Request) -> web.StreamResponse:
    if not request.headers.get("Content-Type"):
        return error(400, ("HTTPError", "malformed Content-Type header"))
    body = await request.read()
    if not body:
        return error(400, ("ProjectsError", "Missing source"))
    return error(400, ("ProjectsError", "Problem parsing POST body: this server builds only "
                                        "from its configured apt sources (serve --mirror or "
                                        "--offline-repo); user sources are not supported"))


@route()
async def sources_delete(request: web.Request) -> web.StreamResponse:
    sid = request.match_info.get("names", "")
    if not sid:
        return not_found()
    if sid == ctx(request).pkgs.source_id():
        return error(400, ("SystemSource", f"{sid} is a system source, it cannot be deleted."))
    return error(400, ("UnknownSource", f"{sid} is not a valid source."))


async def not_implemented(request: web.Request) -> web.StreamResponse:
    return web.Response(status=501, content_type=JSON_TYPE)


def add_routes(app: web.Application) -> None:
    r = app.router
    v = "/api/v{version}"
    r.add_get("/api/status", status)
    r.add_get(f"{v}/distros/list", distros_list)
    r.add_get(f"{v}/blueprints/list", bp_list)
    r.add_get(v + "/blueprints/info/{names:.*}", bp_info)
    r.add_get(v + "/blueprints/change/{name}/{commit}", bp_change)
    r.add_get(v + "/blueprints/changes/{names:.*}", bp_changes)
    r.add_post(f"{v}/blueprints/new", bp_new)
    r.add_post(f"{v}/blueprints/workspace", bp_workspace)
    r.add_delete(v + "/blueprints/workspace/{name}", bp_delete_workspace)
    r.add_delete(v + "/blueprints/delete/{name}", bp_delete)
    r.add_post(v + "/blueprints/undo/{name}/{commit}", bp_undo)
    r.add_post(v + "/blueprints/tag/{name}", bp_tag)
    r.add_get(v + "/blueprints/diff/{name}/{from}/{to}", bp_diff)
    r.add_get(v + "/blueprints/depsolve/{names:.*}", bp_depsolve)
    r.add_get(v + "/blueprints/freeze/{names:.*}", bp_freeze)
    r.add_get(f"{v}/projects/list", projects_list)
    r.add_get(f"{v}/projects/list/", projects_list)
    r.add_get(v + "/projects/info{rest:(/.*)?}", projects_info)
    r.add_get(v + "/modules/info{rest:(/.*)?}", projects_info)
    r.add_get(v + "/modules/list{rest:(/.*)?}", modules_list)
    r.add_get(v + "/projects/depsolve{rest:(/.*)?}", projects_depsolve)
    r.add_get(f"{v}/projects/source/list", sources_list)
    r.add_get(v + "/projects/source/info/{names:.*}", sources_info)
    r.add_post(f"{v}/projects/source/new", sources_new)
    r.add_delete(v + "/projects/source/delete/{names:.*}", sources_delete)
    for method, path in (("POST", "/compose/uploads/schedule/{x}"),
                         ("DELETE", "/upload/delete/{x}"), ("GET", "/upload/info/{x}"),
                         ("GET", "/upload/log/{x}"), ("POST", "/upload/reset/{x}"),
                         ("DELETE", "/upload/cancel/{x}"), ("GET", "/upload/providers"),
                         ("POST", "/upload/providers/save"),
                         ("DELETE", "/upload/providers/delete/{x}/{y}")):
        r.add_route(method, v + path, not_implemented)
