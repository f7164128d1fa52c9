"""The weldr API surface, request by request, against a real server (no workers: nothing is
built here), judged on osbuild-composer's paths, JSON shapes, HTTP codes and error ids."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicedge.composer.client import Client
from tests.composer.conftest import Server, blueprint, push, start_compose, status_of


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, composer_repo: Path,
        composer_cache: Path) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("api")
    server = Server(work, composer_repo, composer_cache, workers=0).start()
    yield server
    server.stop()
    server.kill_group()


@pytest.fixture
def api(srv: Server) -> Client:
    return srv.client()


def raw(api: Client, method: str, path: str, body: bytes | None = None,
        ctype: str | None = None) -> tuple[int, Any]:
    reply = api.request(method, path, body, ctype)
    return reply.status, reply.json() if reply.body else None


def errors(body: Any) -> list[tuple[str, str]]:
    return [(e["id"], e["msg"]) for e in body["errors"]]


def test_status_distros_and_types_have_composer_shapes(api: Client) -> None:
    code, body = raw(api, "GET", "/api/status")
    assert code == 200
    assert set(body) == {"api", "db_supported", "db_version", "schema_version", "backend",
                         "build", "msgs"}
    assert body["api"] == "1" and body["backend"] == "osbuild-composer" and body["msgs"] == []
    assert raw(api, "GET", "/api/v1/distros/list") == (200, {"distros": ["debian-12"]})
    code, body = raw(api, "GET", "/api/v0/distros/list")   # v1-only route
    assert code == 404 and body["errors"][0] == {"code": 404, "id": "HTTPError",
                                                 "msg": "Not Found"}
    assert raw(api, "GET", "/api/v2/blueprints/list")[0] == 404
    code, body = raw(api, "GET", "/api/v1/compose/types")
    assert code == 200 and {"name": "edge-commit", "enabled": True} in body["types"]
    assert all(set(t) == {"name", "enabled"} and t["enabled"] for t in body["types"])
    code, body = raw(api, "GET", "/api/v1/compose/types?distro=fedora-99")
    assert code == 400 and errors(body) == [("DistroError", "Invalid distro: fedora-99")]


def test_push_auto_bumps_version_exactly_like_osbuild_composer(api: Client) -> None:
    def version() -> str:
        return str(api.get("blueprints/info/bump")["blueprints"][0]["version"])

    push(api, blueprint("bump", "1.0.0"))
    assert version() == "1.0.0"
    push(api, blueprint("bump", "1.0.0"))          # same version -> patch + 1
    assert version() == "1.0.1"
    push(api, blueprint("bump", "1.0.1-rc.1"))     # a different version is kept as given
    assert version() == "1.0.1-rc.1"
    push(api, blueprint("bump", "1.0.1-rc.1"))     # bump drops the pre-release
    assert version() == "1.0.2"
    push(api, blueprint("bump", "0.5.0"))          # even a lower one
    assert version() == "0.5.0"
    body = json.dumps({"name": "bump", "packages": [{"name": "edge-hello"}]}).encode()
    api.call("POST", "/api/v1/blueprints/new", body, "application/json")
    assert version() == "0.0.0"                    # empty -> 0.0.0, differs from 0.5.0
    api.call("POST", "/api/v1/blueprints/new", body, "application/json")
    assert version() == "0.0.1"
    changes = api.get("blueprints/changes/bump?limit=3")["blueprints"][0]
    assert changes["name"] == "bump" and changes["total"] == 7
    newest = changes["changes"][0]
    assert set(newest) == {"commit", "message", "revision", "timestamp"}
    assert newest["message"] == "Recipe bump, version 0.0.1 saved."
    assert re.fullmatch(r"[0-9a-f]{40}", newest["commit"]) and newest["revision"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", newest["timestamp"])
    assert len(changes["changes"]) == 3


def test_info_list_json_and_toml_shapes_and_hashed_password(api: Client) -> None:
    push(api, blueprint("shape", "2.0.0"))
    info = api.get("blueprints/info/shape")
    bp = info["blueprints"][0]
    assert list(bp)[:7] == ["name", "description", "version", "packages", "modules",
                            "enabled_modules", "groups"]
    assert bp["packages"] == [{"name": "edge-hello"}] and bp["modules"] == []
    assert info["changes"] == [{"changed": False, "name": "shape"}] and info["errors"] == []
    password = bp["customizations"]["user"][0]["password"]
    assert password.startswith("$6$") and "s3cret" not in json.dumps(info)
    toml = tomllib.loads(api.text("blueprints/info/shape?format=toml"))
    assert toml["name"] == "shape" and toml["version"] == "2.0.0"
    assert toml["customizations"]["kernel"] == {"name": "edge-test-kernel"}
    listing = api.get("blueprints/list?offset=0&limit=100")
    assert "shape" in listing["blueprints"] and listing["total"] == len(listing["blueprints"])
    assert api.get("blueprints/list?limit=0")["blueprints"] == []


def test_workspace_diff_tag_undo_and_change(api: Client) -> None:
    push(api, blueprint("hist", "1.0.0"))
    first = api.get("blueprints/changes/hist")["blueprints"][0]["changes"][0]["commit"]
    draft = blueprint("hist", "1.0.0", extra='\n[[packages]]\nname = "edge-agent"\n')
    api.call("POST", "/api/v1/blueprints/workspace", draft.encode(), "text/x-toml")
    info = api.get("blueprints/info/hist")
    assert info["changes"] == [{"changed": True, "name": "hist"}]
    assert {"name": "edge-agent"} in info["blueprints"][0]["packages"]
    assert api.get("blueprints/diff/hist/NEWEST/WORKSPACE") == {
        "diff": [{"new": {"Package": {"name": "edge-agent"}}, "old": None}]}
    code, body = raw(api, "GET", f"/api/v1/blueprints/diff/hist/{first}/WORKSPACE")
    assert code == 400 and errors(body) == [
        ("UnknownCommit", f"ggit-error: revspec '{first}' not found (-3)")]
    api.call("DELETE", "/api/v1/blueprints/workspace/hist")
    assert api.get("blueprints/info/hist")["changes"][0]["changed"] is False
    api.call("POST", "/api/v1/blueprints/tag/hist")
    api.call("POST", "/api/v1/blueprints/tag/hist")          # already tagged: no-op
    push(api, draft)                                          # 1.0.1, with edge-agent
    api.call("POST", "/api/v1/blueprints/tag/hist")
    revs = [c["revision"] for c in api.get("blueprints/changes/hist")["blueprints"][0]["changes"]]
    assert revs == [2, 1]
    api.call("POST", f"/api/v1/blueprints/undo/hist/{first}")
    hist = api.get("blueprints/changes/hist")["blueprints"][0]["changes"]
    assert hist[0]["message"] == f"hist.toml reverted to commit {first}"
    now = api.get("blueprints/info/hist")["blueprints"][0]
    assert now["packages"] == [{"name": "edge-hello"}]
    assert now["version"] == "1.0.0"          # the old change's version differs: kept
    assert api.get(f"blueprints/change/hist/{first}")["version"] == "1.0.0"
    assert raw(api, "GET", f"/api/v0/blueprints/change/hist/{first}")[0] == 404


@pytest.mark.parametrize(("method", "path", "body", "ctype", "code", "eid", "msg"), [
    ("POST", "/api/v1/blueprints/new", b"x", None, 400, "BlueprintsError",
     "missing Content-Type header"),
    ("POST", "/api/v1/blueprints/new", b"", "text/x-toml", 400, "BlueprintsError",
     "Missing blueprint"),
    ("POST", "/api/v1/blueprints/new", b"name = ", "text/x-toml", 400, "BlueprintsError",
     "400 Bad Request: The browser (or proxy) sent a request that this server could not "
     "understand: "),
    ("POST", "/api/v1/blueprints/new", b'name = "bad name"', "text/x-toml", 400,
     "InvalidChars", "Invalid characters in API path"),
    ("POST", "/api/v1/blueprints/new", b'name = "v"\nversion = "1.0"', "text/x-toml", 400,
     "BlueprintsError", "Invalid 'version', must use Semantic Versioning"),
    ("POST", "/api/v1/blueprints/new", b'name = "d"\ndistro = "fedora-41"', "text/x-toml",
     400, "BlueprintsError", "'fedora-41' is not a valid distribution"),
    ("POST", "/api/v1/blueprints/new",
     b'name = "fs"\n[[customizations.filesystem]]\nmountpoint = "/"\nminsize = 1',
     "text/x-toml", 400, "BlueprintsError",
     "blueprint fs: customizations.filesystem: not supported"),
    ("DELETE", "/api/v1/blueprints/delete/nope", None, None, 400, "BlueprintsError",
     "Unknown blueprint: nope"),
    ("DELETE", "/api/v1/blueprints/workspace/nope", None, None, 400, "BlueprintsError",
     "Unknown blueprint: nope"),
    ("POST", "/api/v1/blueprints/tag/nope", None, None, 400, "BlueprintsError",
     "Unknown blueprint"),
    ("POST", "/api/v1/blueprints/undo/nope/abc", None, None, 400, "UnknownCommit",
     "Unknown blueprint"),
    ("GET", "/api/v1/blueprints/diff/nope/NEWEST/WORKSPACE", None, None, 404,
     "UnknownBlueprint", "Unknown blueprint name: nope"),
    ("GET", "/api/v1/blueprints/info/nope?format=toml", None, None, 400, "UnknownBlueprint",
     "nope: "),
    ("GET", "/api/v1/blueprints/info/nope?format=xml", None, None, 400, "InvalidChars",
     "invalid format parameter: xml"),
    ("GET", "/api/v1/blueprints/list?limit=abc", None, None, 400, "BadLimitOrOffset",
     "BadRequest: invalid value for 'limit'"),
    ("GET", "/api/v1/no/such/route", None, None, 404, "HTTPError", "Not Found"),
])
def test_bad_blueprint_requests_get_composer_error_ids(
        api: Client, method: str, path: str, body: bytes | None, ctype: str | None,
        code: int, eid: str, msg: str) -> None:
    got, reply = raw(api, method, path, body, ctype)
    assert got == code, reply
    assert reply["status"] is False
    assert reply["errors"][0]["id"] == eid and reply["errors"][0]["msg"].startswith(msg)


def test_unknown_blueprints_are_errors_inside_a_200_reply(api: Client) -> None:
    assert raw(api, "GET", "/api/v1/blueprints/info/nope") == (
        200, {"blueprints": [], "changes": [], "errors": [
            {"id": "UnknownBlueprint", "msg": "nope: "}]})
    code, body = raw(api, "GET", "/api/v1/blueprints/changes/nope")
    assert code == 200 and errors(body) == [("UnknownBlueprint", "nope")]
    code, body = raw(api, "GET", "/api/v1/blueprints/depsolve/nope")
    assert code == 200 and errors(body) == [("UnknownBlueprint", "nope: blueprint not found")]
    assert raw(api, "POST", "/api/v1/blueprints/list")[0] == 405


@pytest.mark.parametrize("path", [
    "/api/v1/blueprints/info/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/blueprints/info/..",
    "/api/v1/blueprints/changes/a,..%2Fb",
    "/api/v1/blueprints/freeze/%2E%2E",
    "/api/v1/blueprints/depsolve/%2e%2e%2f%2e%2e%2fstate",
])
def test_path_traversal_in_blueprint_names_is_refused(api: Client, path: str) -> None:
    code, body = raw(api, "GET", path)
    assert code == 400 and errors(body) == [("InvalidChars", "Invalid characters in API path")]


def test_path_traversal_in_writes_and_compose_ids_is_refused(api: Client, srv: Server) -> None:
    code, body = raw(api, "DELETE", "/api/v1/blueprints/delete/..")
    assert code == 400 and body["errors"][0]["id"] == "InvalidChars"
    bad = json.dumps({"name": "../../escape", "version": "1.0.0"}).encode()
    code, body = raw(api, "POST", "/api/v1/blueprints/new", bad, "application/json")
    assert code == 400 and body["errors"][0]["id"] == "InvalidChars"
    for route in ("info", "image", "log", "logs", "metadata", "results"):
        code, body = raw(api, "GET", f"/api/v1/compose/{route}/..%2F..%2Fcomposer.db")
        assert code == 400 and body["errors"][0]["id"] == "UnknownUUID", route
    code, body = raw(api, "DELETE", "/api/v1/compose/delete/..%2Fartifacts")
    assert code == 200 and body["errors"][0]["id"] == "UnknownUUID"
    for path in ("/ui/..%2Fserver.py", "/ui/%2E%2E/%2E%2E/db.py", "/ui/../api.py", "/ui/%00"):
        assert api.request("GET", path).status == 404, path
    assert not (srv.state.parent / "escape").exists()


def test_projects_and_modules_come_from_the_apt_sources(api: Client,
                                                        composer_repo: Path) -> None:
    total = (composer_repo / "Packages").read_text().count("\nPackage: ") + 1
    listing = api.get("projects/list?limit=5")
    assert listing["total"] == total and len(listing["projects"]) == 5
    assert set(listing["projects"][0]) == {"name", "summary", "description", "homepage",
                                           "upstream_vcs", "builds"}
    hello = api.get("projects/info/edge-hello")["projects"][0]
    assert hello["summary"] == "atomicedge test package edge-hello"
    assert hello["builds"][0]["source"]["version"] == "1.0"
    assert hello["builds"][0]["arch"] == "all"
    code, body = raw(api, "GET", "/api/v1/projects/info/no-such-package")
    assert code == 400 and errors(body) == [("UnknownProject", "No packages have been found.")]
    mods = api.get("modules/list/edge-*")
    assert [m["name"] for m in mods["modules"]] == ["edge-agent", "edge-hello",
                                                     "edge-test-kernel"]
    assert {m["group_type"] for m in mods["modules"]} == {"rpm"}
    code, body = raw(api, "GET", "/api/v1/modules/list/zzz*")
    assert code == 400 and errors(body) == [("UnknownModule", "No packages have been found.")]
    agent = api.get("modules/info/edge-agent")["modules"][0]
    assert "edge-hello" in [d["name"] for d in agent["dependencies"]]
    deps = api.get("projects/depsolve/edge-agent")["projects"]
    assert {"edge-agent", "edge-hello"} <= {d["name"] for d in deps}
    assert set(deps[0]) == {"name", "epoch", "version", "release", "arch"}
    code, body = raw(api, "GET", "/api/v1/projects/depsolve/no-such-package")
    assert code == 400 and body["errors"][0]["id"] == "ProjectsError"


def test_blueprint_depsolve_and_freeze(api: Client) -> None:
    push(api, blueprint("frz", "1.0.0", extra='\n[[packages]]\nname = "edge-a*"\n'))
    dep = api.get("blueprints/depsolve/frz")
    assert dep["errors"] == []
    names = {d["name"]: d for d in dep["blueprints"][0]["dependencies"]}
    assert names["edge-hello"]["version"] == "1.0" and "bash" in names
    frozen = api.get("blueprints/freeze/frz")["blueprints"][0]["blueprint"]
    assert frozen["packages"] == [{"name": "edge-agent", "version": "1.0"},
                                  {"name": "edge-hello", "version": "1.0"}]
    toml = tomllib.loads(api.text("blueprints/freeze/frz?format=toml"))
    assert toml["packages"] == frozen["packages"]
    push(api, blueprint("mods", "1.0.0", extra='\n[[modules]]\nname = "edge-agent"\n'))
    mods = api.get("blueprints/depsolve/mods")["blueprints"][0]   # [[modules]] = packages
    assert mods["blueprint"]["modules"] == [{"name": "edge-agent"}]
    assert "edge-agent" in {d["name"] for d in mods["dependencies"]}
    assert api.get("blueprints/freeze/mods")["blueprints"][0]["blueprint"]["modules"] == [
        {"name": "edge-agent", "version": "1.0"}]
    push(api, blueprint("broken", "1.0.0", extra='\n[[packages]]\nname = "no-such-pkg"\n'))
    bad = api.get("blueprints/depsolve/broken")
    assert bad["errors"][0]["id"] == "BlueprintsError"
    assert "no-such-pkg" in bad["errors"][0]["msg"]
    code, body = raw(api, "POST", "/api/v1/compose", json.dumps(
        {"blueprint_name": "broken", "compose_type": "edge-commit"}).encode(),
        "application/json")
    assert code == 400 and body["errors"][0]["id"] == "DepsolveError"


def _tar_names(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore
                if m.isfile()}


def test_compose_test_modes_finish_or_fail_at_once(api: Client) -> None:
    push(api, blueprint("tm", "3.0.0"))
    failed = start_compose(api, "tm", test="1")
    finished = start_compose(api, "tm", test="2")
    assert status_of(api, failed)["queue_status"] == "FAILED"
    entry = status_of(api, finished)
    assert entry["queue_status"] == "FINISHED" and entry["blueprint"] == "tm"
    assert entry["version"] == "3.0.0" and entry["compose_type"] == "edge-commit"
    assert {"id", "image_size", "job_created", "job_started", "job_finished"} <= set(entry)
    assert finished in [e["id"] for e in api.get("compose/finished")["finished"]]
    assert failed in [e["id"] for e in api.get("compose/failed")["failed"]]
    info = api.get(f"compose/info/{finished}")
    assert set(info) == {"id", "config", "blueprint", "commit", "deps", "compose_type",
                         "queue_status", "image_size"}
    assert "edge-hello" in [p["name"] for p in info["deps"]["packages"]]
    logs = _tar_names(api.request("GET", f"/api/v1/compose/logs/{finished}").body)
    assert "nothing was built" in logs["logs/osbuild.log"].decode()
    meta = _tar_names(api.request("GET", f"/api/v1/compose/metadata/{failed}").body)
    assert json.loads(meta[f"{failed}.json"])["request"]["blueprint"]["name"] == "tm"
    results = _tar_names(api.request("GET", f"/api/v1/compose/results/{finished}").body)
    assert set(results) == {f"{finished}.json", "logs/osbuild.log"}
    code, body = raw(api, "GET", f"/api/v1/compose/image/{finished}")
    assert code == 400 and body["errors"][0]["id"] == "InternalServerError"
    assert api.call("DELETE", f"/api/v1/compose/delete/{failed},{finished}") == {
        "uuids": [{"uuid": failed, "status": True}, {"uuid": finished, "status": True}],
        "errors": []}
    assert api.get(f"compose/status/{failed},{finished}") == {"uuids": []}


def test_waiting_compose_states_cancel_and_wrong_state_errors(api: Client) -> None:
    push(api, blueprint("wait", "1.0.0"))
    build = start_compose(api, "wait")             # no workers: stays WAITING
    queue = api.get("compose/queue")
    assert build in [e["id"] for e in queue["new"]] and queue["run"] == []
    code, body = raw(api, "GET", f"/api/v1/compose/log/{build}")
    assert code == 200 and errors(body) == [
        ("BuildInWrongState", f"Build {build} has not started yet. No logs to view.")]
    code, body = raw(api, "GET", f"/api/v1/compose/image/{build}")
    assert code == 400 and errors(body) == [
        ("BuildInWrongState", f"Build {build} is in wrong state: WAITING")]
    code, body = raw(api, "GET", f"/api/v1/compose/logs/{build}")
    assert code == 400 and body["errors"][0]["id"] == "BuildInWrongState"
    code, body = raw(api, "DELETE", f"/api/v1/compose/delete/{build}")
    assert code == 200 and errors(body) == [
        ("BuildInWrongState", f"Compose {build} is not in FINISHED or FAILED.")]
    assert api.call("DELETE", f"/api/v1/compose/cancel/{build}") == {"uuid": build,
                                                                     "status": True}
    assert status_of(api, build)["queue_status"] == "FAILED"
    code, body = raw(api, "DELETE", f"/api/v1/compose/cancel/{build}")
    assert code == 400 and errors(body) == [
        ("BuildInWrongState", f"Build {build} is not in WAITING or RUNNING.")]


@pytest.mark.parametrize(("body", "ctype", "code", "eid"), [
    ({"blueprint_name": "tm", "compose_type": "edge-commit"}, "text/plain", 400,
     "MissingPost"),
    ("{not json", "application/json", 404, "HTTPError"),
    ({"blueprint_name": "nope", "compose_type": "edge-commit"}, "application/json", 400,
     "UnknownBlueprint"),
    ({"blueprint_name": "a/b", "compose_type": "edge-commit"}, "application/json", 400,
     "InvalidChars"),
    ({"blueprint_name": "sb", "compose_type": "qcow2"}, "application/json", 400,
     "ComposeError"),
    ({"blueprint_name": "sb", "compose_type": "edge-commit", "ostree": {"parent": "x/y"}},
     "application/json", 400, "ManifestCreationFailed"),
    ({"blueprint_name": "sb", "compose_type": "edge-commit", "ostree": {"ref": "bad ref"}},
     "application/json", 400, "ManifestCreationFailed"),
    ({"blueprint_name": "sb", "compose_type": "edge-commit",
      "ostree": {"url": "http://127.0.0.1:9/repo"}}, "application/json", 400,
     "OSTreeOptionsError"),
])
def test_bad_compose_requests_get_composer_error_ids(
        api: Client, body: Any, ctype: str, code: int, eid: str) -> None:
    push(api, blueprint("sb", "1.0.0"))
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    got, reply = raw(api, "POST", "/api/v1/compose", data, ctype)
    assert got == code and reply["errors"][0]["id"] == eid, reply


def test_bad_compose_ids_get_unknown_uuid(api: Client) -> None:
    code, body = raw(api, "GET", "/api/v1/compose/status/not-a-uuid")
    assert code == 400 and errors(body) == [("UnknownUUID",
                                             "not-a-uuid is not a valid build uuid")]
    missing = "00000000-0000-4000-8000-000000000000"
    assert api.get(f"compose/status/{missing}") == {"uuids": []}
    code, body = raw(api, "GET", f"/api/v1/compose/info/{missing}")
    assert code == 400 and body["errors"][0]["id"] == "UnknownUUID"
    code, body = raw(api, "DELETE", f"/api/v1/compose/cancel/{missing}")
    assert code == 400 and errors(body) == [("UnknownUUID",
                                             f"Compose {missing} doesn't exist")]


def test_sources_are_the_servers_apt_sources_read_only(api: Client) -> None:
    assert api.get("projects/source/list") == {"sources": ["offline"]}
    info = api.get("projects/source/info/offline")
    assert info["sources"]["offline"]["system"] is True and info["errors"] == []
    assert info["sources"]["offline"]["url"].startswith("file:///")
    code, body = raw(api, "GET", "/api/v1/projects/source/info/nope")
    assert code == 200 and body["errors"][0]["id"] == "UnknownSource"
    code, body = raw(api, "DELETE", "/api/v1/projects/source/delete/offline")
    assert code == 400 and errors(body) == [
        ("SystemSource", "offline is a system source, it cannot be deleted.")]
    code, body = raw(api, "POST", "/api/v1/projects/source/new", b'id = "x"', "text/x-toml")
    assert code == 400 and body["errors"][0]["id"] == "ProjectsError"
    assert raw(api, "GET", "/api/v1/upload/providers")[0] == 501


def _cli(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atomicedge.cli.main", "composer", "-s",
                           str(srv.socket), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_speaks_composer_cli(srv: Server, tmp_path: Path) -> None:
    (tmp_path / "cli.toml").write_text(blueprint("cli", "1.2.3"))
    assert _cli(srv, "blueprints", "push", str(tmp_path / "cli.toml")).returncode == 0
    assert "cli" in _cli(srv, "blueprints", "list").stdout.split()
    shown = tomllib.loads(_cli(srv, "blueprints", "show", "cli").stdout)
    assert shown["version"] == "1.2.3"
    assert "edge-commit" in _cli(srv, "compose", "types").stdout.splitlines()
    started = _cli(srv, "--test", "2", "compose", "start", "cli", "edge-commit")
    m = re.fullmatch(r"Compose ([0-9a-f-]{36}) added to the queue\n", started.stdout)
    assert m, started.stdout + started.stderr
    status = _cli(srv, "compose", "status").stdout.splitlines()
    assert status[0].split() == ["ID", "Status", "Time", "Blueprint", "Version", "Type", "Size"]
    assert any(line.startswith(m.group(1)) and "FINISHED" in line and "cli" in line
               for line in status)
    ostree = _cli(srv, "--test", "2", "compose", "start-ostree", "cli", "edge-commit", "--ref",
                  "debian/12/x86_64/gw", "--url", "http://127.0.0.1:9/repo/")
    assert ostree.returncode == 0, ostree.stderr
    build = ostree.stdout.split()[1]
    meta = json.loads(_tar_names(srv.client().request(
        "GET", f"/api/v1/compose/metadata/{build}").body)[f"{build}.json"])
    assert meta["request"]["ostree"] == {"ref": "debian/12/x86_64/gw", "parent": "",
                                         "url": "http://127.0.0.1:9/repo/"}
    bad = _cli(srv, "compose", "info", "bogus")
    assert bad.returncode == 1
    assert bad.stderr == "ERROR: UnknownUUID: bogus is not a valid build uuid\n"
    dumped = json.loads(_cli(srv, "blueprints", "list", "--json").stdout)
    assert dumped[-1]["method"] == "GET" and dumped[-1]["status"] == 200
    assert "cli" in dumped[-1]["body"]["blueprints"]
    assert "Backend:            osbuild-composer" in _cli(srv, "status", "show").stdout
