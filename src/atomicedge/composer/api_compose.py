"""The weldr API's compose routes: start (with ``ostree`` options and test modes), queue,
status, info, cancel, delete, log(s), metadata, results, image, types.

As in osbuild-composer, ``POST /compose`` depsolves the blueprint and resolves the ostree
parent before it answers, so a bad package or an unreachable parent fails at once with an
error id instead of minutes later; ``?test=1`` makes a compose that is FAILED at once and
``?test=2`` one that is FINISHED at once, without building (client test suites rely on it).

Beyond osbuild-composer (extra JSON fields old clients ignore): a RUNNING compose carries
``progress`` ``{done, total, message}``, and ``compose/log`` returns the live log so far
instead of "still running".
"""

from __future__ import annotations

import asyncio
import json
import re
import tarfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from atomicedge.compose.blueprint import DISTROS
from atomicedge.composer import blueprints as bpmod
from atomicedge.composer.api import (
    Context,
    check_distro,
    ctx,
    error,
    invalid_chars,
    not_found,
    reply,
    route,
)
from atomicedge.composer.queue import FAILED, FINISHED, RUNNING, WAITING, Job
from atomicedge.composer.worker import ARTIFACT_NAMES
from atomicedge.errors import AtomicEdgeError

REF_RE = re.compile(r"^(?:[\w\d][-._\w\d]*/)*[\w\d][-._\w\d]*$", re.ASCII)
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def parse_uuid(text: str) -> str | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return str(value) if str(value) == text.lower() else None


def entry(job: Job) -> dict[str, Any]:
    """osbuild-composer's ComposeEntry (times in float epoch seconds, omitted when unset)."""
    out: dict[str, Any] = {"id": job.id, "blueprint": job.blueprint_name,
                           "version": job.version, "compose_type": job.compose_type,
                           "image_size": job.image_size if job.state == FINISHED else 0,
                           "queue_status": job.state, "job_created": job.queued}
    if job.started:
        out["job_started"] = job.started
    if job.finished:
        out["job_finished"] = job.finished
    if job.state == RUNNING:
        out["progress"] = {"done": job.progress_done, "total": job.progress_total,
                           "message": job.message}
    elif job.state == FAILED and job.message:
        out["error"] = job.message
    return out


def _sorted(jobs: list[Job]) -> list[dict[str, Any]]:
    return [entry(j) for j in sorted(jobs, key=lambda j: j.id)]


# ---- start ----------------------------------------------------------------------------

def check_ostree(opts: Any) -> tuple[str, str] | None:
    """(error id, message) for options osbuild-composer would refuse, else None."""
    if opts is None:
        return None
    if not isinstance(opts, dict) or not all(
            isinstance(opts.get(k, ""), str) for k in ("ref", "parent", "url")):
        return "OSTreeOptionsError", "ostree options must be strings"
    ref, parent, url = (opts.get(k) or "" for k in ("ref", "parent", "url"))
    prefix = "failed to initialize osbuild manifest: "
    if ref and (not REF_RE.match(ref) or HEX64.match(ref)):
        return "ManifestCreationFailed", f"{prefix}Invalid ostree ref {ref!r}"
    if parent and not (REF_RE.match(parent) or HEX64.match(parent)):
        return "ManifestCreationFailed", f"{prefix}Invalid ostree parent ref {parent!r}"
    if parent and not url:
        return "ManifestCreationFailed", \
            f"{prefix}ostree parent ref specified, but no URL to retrieve it"
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.path):
            return "OSTreeOptionsError", f"invalid ostree URL {url!r}"
    return None


def resolve_parent(url: str, ref: str) -> str:
    """``GET <url>/refs/heads/<ref>`` -> checksum (osbuild-composer resolves it in the POST)."""
    target = f"{url.rstrip('/')}/refs/heads/{ref}"
    try:
        with urllib.request.urlopen(target, timeout=30) as resp:
            text = resp.read(200).decode().strip()
    except (OSError, ValueError) as exc:
        raise ValueError(f"error sending request to ostree repository {target!r}: {exc}") \
            from None
    if not HEX64.match(text):
        raise ValueError(f"ostree repository {target!r} returned an invalid commit id")
    return text


def _prepare(c: Context, bp: dict[str, Any], ostree: dict[str, Any],
             test: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Depsolve (DepsolveError) and pin the parent commit (OSTreeOptionsError)."""
    try:
        deps = c.pkgs.depsolve_blueprint(bpmod.to_model(bp))
    except AtomicEdgeError as exc:
        raise _ApiError("DepsolveError", str(exc)) from None
    ostree = dict(ostree)
    if ostree.get("url") and not test and not HEX64.match(ostree.get("parent") or ""):
        from atomicedge.compose.build import default_ref
        ref = ostree.get("ref") or default_ref(bpmod.to_model(bp), c.pkgs.arch)
        try:
            ostree["parent"] = resolve_parent(ostree["url"], ostree.get("parent") or ref)
        except ValueError as exc:
            raise _ApiError("OSTreeOptionsError", str(exc)) from None
    return deps, ostree


class _ApiError(Exception):
    def __init__(self, error_id: str, msg: str) -> None:
        super().__init__(msg)
        self.error_id = error_id
        self.msg = msg


@route()
async def compose_start(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        return error(400, ("MissingPost", "blueprint must be json"))
    try:
        cr = json.loads(await request.read())
        if not isinstance(cr, dict):
            raise ValueError("not an object")
    except ValueError:
        return not_found()
    name, ctype = cr.get("blueprint_name"), cr.get("compose_type")
    if not isinstance(name, str) or not bpmod.valid_name(name):
        return invalid_chars()
    c = ctx(request)
    bp = c.store.committed(name)
    if bp is None:
        return error(400, ("UnknownBlueprint", f"Unknown blueprint name: {name}"))
    if (bp.get("distro") or "debian-12") not in DISTROS:
        return error(400, ("DistroError", f"Unknown distribution: {bp.get('distro')}"))
    if not isinstance(ctype, str) or ctype not in c.image_types:
        return error(400, ("ComposeError", f"Failed to get compose type {ctype!r}: invalid "
                                           f"image type: {ctype}"))
    size = cr.get("size") or 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return not_found()
    bad = check_ostree(cr.get("ostree"))
    if bad:
        return error(400, bad)
    test = request.query.get("test", "")
    try:
        deps, ostree = await asyncio.to_thread(_prepare, c, bp, cr.get("ostree") or {},
                                               test in ("1", "2"))
    except _ApiError as exc:
        return error(400, (exc.error_id, exc.msg))
    src = c.pkgs.sources
    args = {"blueprint": bp, "ostree": ostree, "profile": c.pkgs.profile, "arch": c.pkgs.arch,
            "sources": {"name": src.name, "text": src.text,
                        "offline_dir": str(src.offline_dir) if src.offline_dir else None}}
    test_state = {"1": FAILED, "2": FINISHED}.get(test)
    job_id = c.queue.enqueue(blueprint=bp, compose_type=ctype, size=size, args=args,
                             packages=deps, test_state=test_state)
    c.wakeup.set()
    return reply({"build_id": job_id, "status": True, "warnings": []})


# ---- lists -----------------------------------------------------------------------------

@route()
async def compose_types(request: web.Request) -> web.StreamResponse:
    bad = check_distro(request)
    if bad:
        return bad
    return reply({"types": [{"name": t, "enabled": True} for t in ctx(request).image_types]})


@route()
async def compose_queue(request: web.Request) -> web.StreamResponse:
    jobs = ctx(request).queue.all()
    return reply({"new": _sorted([j for j in jobs if j.state == WAITING]),
                  "run": _sorted([j for j in jobs if j.state == RUNNING])})


@route()
async def compose_finished(request: web.Request) -> web.StreamResponse:
    return reply({"finished": _sorted([j for j in ctx(request).queue.all()
                                       if j.state == FINISHED])})


@route()
async def compose_failed(request: web.Request) -> web.StreamResponse:
    return reply({"failed": _sorted([j for j in ctx(request).queue.all()
                                     if j.state == FAILED])})


@route()
async def compose_status(request: web.Request) -> web.StreamResponse:
    param = request.match_info["uuids"]
    jobs = {j.id: j for j in ctx(request).queue.all()}
    if param == "*":
        wanted = list(jobs)
    else:
        wanted = []
        for text in param.split(","):
            job_id = parse_uuid(text)
            if job_id is None:
                return error(400, ("UnknownUUID", f"{text} is not a valid build uuid"))
            wanted.append(job_id)
    bp_filter = request.query.get("blueprint", "")
    if bp_filter and not bpmod.valid_name(bp_filter):
        return invalid_chars()
    st_filter, type_filter = request.query.get("status", ""), request.query.get("type", "")
    found = [jobs[i] for i in wanted if i in jobs
             and (not bp_filter or jobs[i].blueprint_name == bp_filter)
             and (not st_filter or jobs[i].state == st_filter)
             and (not type_filter or jobs[i].compose_type == type_filter)]
    return reply({"uuids": _sorted(found)})


# ---- one compose ------------------------------------------------------------------------

def _job(request: web.Request, missing: str) -> Job | web.Response:
    text = request.match_info["uuid"]
    job_id = parse_uuid(text)
    if job_id is None:
        return error(400, ("UnknownUUID", f"{text} is not a valid build uuid"))
    job = ctx(request).queue.get(job_id)
    if job is None:
        return error(400, ("UnknownUUID", missing.format(text)))
    return job


@route()
async def compose_info(request: web.Request) -> web.StreamResponse:
    job = _job(request, "{} is not a valid build uuid")
    if isinstance(job, web.Response):
        return job
    info = {"id": job.id, "config": "", "blueprint": bpmod.ordered(job.args["blueprint"]),
            "commit": (job.result or {}).get("commit", ""),
            "deps": {"packages": sorted(job.packages, key=lambda d: d["name"])},
            "compose_type": job.compose_type, "queue_status": job.state,
            "image_size": job.image_size}
    if job.state == RUNNING:
        info["progress"] = entry(job)["progress"]
    return reply(info)


@route()
async def compose_cancel(request: web.Request) -> web.StreamResponse:
    job = _job(request, "Compose {} doesn't exist")
    if isinstance(job, web.Response):
        return job
    if job.state not in (WAITING, RUNNING) or not ctx(request).queue.cancel(job.id):
        return error(400, ("BuildInWrongState",
                           f"Build {job.id} is not in WAITING or RUNNING."))
    return reply({"uuid": job.id, "status": True})


@route()
async def compose_delete(request: web.Request) -> web.StreamResponse:
    c = ctx(request)
    results, errors = [], []
    for text in request.match_info["uuids"].split(","):
        job_id = parse_uuid(text)
        if job_id is None:
            errors.append({"id": "UnknownUUID", "msg": f"{text} is not a valid uuid"})
            continue
        job = c.queue.get(job_id)
        if job is None:
            errors.append({"id": "UnknownUUID", "msg": f"compose {job_id} doesn't exist"})
            continue
        if job.state not in (FINISHED, FAILED) or not c.queue.delete(job_id):
            errors.append({"id": "BuildInWrongState",
                           "msg": f"Compose {job_id} is not in FINISHED or FAILED."})
            continue
        from atomicedge.compose.mmdebstrap import remove_tree
        await asyncio.to_thread(remove_tree, c.state / "artifacts" / job_id)
        results.append({"uuid": job_id, "status": True})
    return reply({"uuids": results, "errors": errors})


def _log_text(c: Context, job: Job) -> str:
    return "".join(line + "\n" for _, line in c.queue.log_lines(job.id))


@route()
async def compose_log(request: web.Request) -> web.StreamResponse:
    job = _job(request, "Compose {} doesn't exist")
    if isinstance(job, web.Response):
        return job
    if job.state == WAITING:
        return error(200, ("BuildInWrongState",
                           f"Build {job.id} has not started yet. No logs to view."))
    text = _log_text(ctx(request), job)
    size = request.query.get("size", "")
    if size.isdigit():
        text = text.encode()[-int(size) * 1024:].decode(errors="replace")
    return web.Response(text=text, content_type="text/plain")


def _done_job(request: web.Request, msg: str) -> Job | web.Response:
    """The FINISHED or FAILED compose of the path; else the error, ``msg`` formatted with
    (id, state) when it is in another state."""
    job = _job(request, "Compose {} doesn't exist")
    if isinstance(job, web.Response) or job.state in (FINISHED, FAILED):
        return job
    return error(400, ("BuildInWrongState", msg.format(job.id, job.state)))


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 512)


async def _tar_response(request: web.Request, filename: str,
                        members: list[tuple[str, bytes]],
                        image: tuple[str, Job] | None = None) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        "Content-Type": "application/x-tar",
        "Content-Disposition": f"attachment; filename={filename}"})
    await resp.prepare(request)
    for name, data in members:
        await resp.write(_member(name, len(data)) + data + _pad(len(data)))
    if image is not None:
        name, job = image
        size = _artifact_size(ctx(request), job)
        await resp.write(_member(name, size))
        async for chunk in _artifact_chunks(ctx(request), job):
            await resp.write(chunk)
        await resp.write(_pad(size))
    await resp.write(b"\0" * 1024)
    await resp.write_eof()
    return resp


@route()
async def compose_logs(request: web.Request) -> web.StreamResponse:
    job = _done_job(request, "Build {} not in FINISHED or FAILED state.")
    if isinstance(job, web.Response):
        return job
    log = _log_text(ctx(request), job).encode()
    return await _tar_response(request, f"{job.id}-logs.tar", [("logs/osbuild.log", log)])


def _metadata(job: Job) -> bytes:
    return json.dumps({"compose_type": job.compose_type, "request": job.args,
                       "packages": job.packages, "result": job.result}, indent=2).encode()


@route()
async def compose_metadata(request: web.Request) -> web.StreamResponse:
    job = _done_job(request, "Build {} is in wrong state: {}")
    if isinstance(job, web.Response):
        return job
    return await _tar_response(request, f"{job.id}-metadata.tar",
                               [(f"{job.id}.json", _metadata(job))])


@route()
async def compose_results(request: web.Request) -> web.StreamResponse:
    job = _done_job(request, "Build {} is in wrong state: {}")
    if isinstance(job, web.Response):
        return job
    members = [(f"{job.id}.json", _metadata(job)),
               ("logs/osbuild.log", _log_text(ctx(request), job).encode())]
    image = None
    if job.state == FINISHED and _artifact_size(ctx(request), job) >= 0:
        image = (f"{job.id}-{_filename(job)}", job)
    return await _tar_response(request, f"{job.id}.tar", members, image)


def _filename(job: Job) -> str:
    return ARTIFACT_NAMES.get(job.compose_type, f"{job.compose_type}.tar")


def _artifact_file(c: Context, job: Job) -> Path | None:
    if not job.artifact or not job.artifact.startswith("file:"):
        return None
    path = Path(job.artifact[5:]).resolve()
    root = (c.state / "artifacts" / job.id).resolve()
    return path if path.parent == root and path.is_file() else None


def _artifact_size(c: Context, job: Job) -> int:
    """Size in bytes, -1 when the compose has no artifact (test mode, failure, deleted)."""
    path = _artifact_file(c, job)
    if path is not None:
        return path.stat().st_size
    if job.artifact and job.artifact.startswith("db:"):
        count, total = c.queue.artifact_chunk_count(job.id)
        return total if count else -1
    return -1


async def _artifact_chunks(c: Context, job: Job):  # type: ignore[no-untyped-def]
    path = _artifact_file(c, job)
    if path is not None:
        with open(path, "rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, 1 << 20):
                yield chunk
        return
    count, _ = c.queue.artifact_chunk_count(job.id)
    for seq in range(count):
        yield await asyncio.to_thread(c.queue.artifact_chunk, job.id, seq)


@route()
async def compose_image(request: web.Request) -> web.StreamResponse:
    job = _job(request, "Compose {} doesn't exist")
    if isinstance(job, web.Response):
        return job
    if job.state != FINISHED:
        return error(400, ("BuildInWrongState",
                           f"Build {job.id} is in wrong state: {job.state}"))
    c = ctx(request)
    size = _artifact_size(c, job)
    if size < 0:
        return error(400, ("InternalServerError",
                           f"Error accessing image file for compose {job.id}: this compose "
                           "has no image (a test compose, or its files were removed)"))
    resp = web.StreamResponse(headers={
        "Content-Type": "application/x-tar", "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename={job.id}-{_filename(job)}"})
    await resp.prepare(request)
    async for chunk in _artifact_chunks(c, job):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    r = app.router
    v = "/api/v{version}"
    r.add_post(f"{v}/compose", compose_start)
    r.add_get(f"{v}/compose/types", compose_types)
    r.add_get(f"{v}/compose/queue", compose_queue)
    r.add_get(f"{v}/compose/finished", compose_finished)
    r.add_get(f"{v}/compose/failed", compose_failed)
    r.add_get(v + "/compose/status/{uuids:.*}", compose_status)
    r.add_get(v + "/compose/info/{uuid:.*}", compose_info)
    r.add_delete(v + "/compose/cancel/{uuid:.*}", compose_cancel)
    r.add_delete(v + "/compose/delete/{uuids:.*}", compose_delete)
    r.add_get(v + "/compose/log/{uuid:.*}", compose_log)
    r.add_get(v + "/compose/logs/{uuid:.*}", compose_logs)
    r.add_get(v + "/compose/metadata/{uuid:.*}", compose_metadata)
    r.add_get(v + "/compose/results/{uuid:.*}", compose_results)
    r.add_get(v + "/compose/image/{uuid:.*}", compose_image)
