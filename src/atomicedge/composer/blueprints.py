"""Blueprints as the weldr API carries them: JSON/TOML dicts, checked by the image builder's rules.

The API stores and returns the blueprint as the client sent it (osbuild-composer's JSON shape:
``name, description, version, packages, modules, enabled_modules, groups, customizations,
distro``), after the same defaults osbuild-composer's ``Initialize`` applies. Every pushed
blueprint is validated by :mod:`atomicedge.compose.validate` (all problems at once, each with
its field and a hint) so a push fails now instead of a compose failing later; empty
``enabled_modules``/``containers`` lists that clients always send are accepted and ignored.

Plain-text passwords are hashed on push (the state database never holds them), with the salt
derived from (blueprint, user) so an unchanged blueprint keeps its cached tree.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from typing import Any

from atomicedge.compose.blueprint import Blueprint
from atomicedge.compose.custom.accounts import hash_password
from atomicedge.compose.validate import NAME_RE, SEMVER, from_dict

ORDER = ("name", "description", "version", "packages", "modules", "enabled_modules", "groups",
         "containers", "customizations", "distro", "architecture")
ALWAYS = ("packages", "modules", "enabled_modules", "groups")


class BlueprintInputError(ValueError):
    """The request body is not a usable blueprint; ``error_id`` is the weldr error id."""

    def __init__(self, error_id: str, msg: str) -> None:
        super().__init__(msg)
        self.error_id = error_id
        self.msg = msg


def valid_name(name: str) -> bool:
    """osbuild-composer's ``^[a-zA-Z0-9._-]+$``, minus ``.`` and ``..`` (path components)."""
    return bool(NAME_RE.match(name)) and name not in (".", "..")


def decode(body: bytes, content_type: str) -> dict[str, Any]:
    """Body -> dict by Content-Type (``application/json`` or ``text/x-toml``)."""
    media = content_type.split(";")[0].strip().lower()
    prefix = "400 Bad Request: The browser (or proxy) sent a request that this server could " \
             "not understand: "
    try:
        text = body.decode("utf-8")
        if media == "application/json":
            raw = json.loads(text)
        elif media == "text/x-toml":
            raw = tomllib.loads(text)
        else:
            raise ValueError("blueprint must be in json or toml format")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BlueprintInputError("BlueprintsError", prefix + str(exc)) from None
    if not isinstance(raw, dict):
        raise BlueprintInputError("BlueprintsError", prefix + "top level must be an object")
    return raw


def initialize(raw: dict[str, Any]) -> dict[str, Any]:
    """osbuild-composer's defaults: empty lists, version 0.0.0; name and version checked."""
    bp = copy.deepcopy(raw)
    name = bp.get("name")
    if not isinstance(name, str) or not valid_name(name):
        raise BlueprintInputError("InvalidChars", "Invalid characters in API path")
    for key in ALWAYS:
        if bp.get(key) is None:
            bp[key] = []
    version = bp.get("version") or "0.0.0"
    if not isinstance(version, str) or not SEMVER.match(version):
        raise BlueprintInputError(
            "BlueprintsError", f"Invalid 'version', must use Semantic Versioning: {version!r}")
    bp["version"] = version
    for idx, pkg in enumerate(bp.get("packages") or []):
        if isinstance(pkg, dict) and not pkg.get("name"):
            raise BlueprintInputError(
                "BlueprintsError", "All package entries need to contain the name of the "
                f"package. Entry #{idx + 1} has no name.")
    return bp


def _for_validation(bp: dict[str, Any]) -> dict[str, Any]:
    """Drop what weldr clients always send empty, and osbuild-composer-only spellings."""
    out = {k: v for k, v in bp.items() if v not in (None, "", []) or k == "name"}
    for key in ("packages", "modules", "groups"):
        if isinstance(out.get(key), list):
            out[key] = [{k: v for k, v in p.items() if v != ""} if isinstance(p, dict) else p
                        for p in out[key]]
    return out


def to_model(bp: dict[str, Any]) -> Blueprint:
    """Validate with the image builder's rules; BlueprintError lists every problem."""
    return from_dict(_for_validation(bp), source=str(bp.get("name")))


def hash_passwords(bp: dict[str, Any]) -> dict[str, Any]:
    users = (bp.get("customizations") or {}).get("user") or []
    for user in users:
        if isinstance(user, dict) and isinstance(user.get("password"), str):
            if user["password"] == "":
                del user["password"]
            else:
                user["password"] = hash_password(user["password"],
                                                 f"{bp['name']}\0{user.get('name')}")
    return bp


def ordered(bp: dict[str, Any]) -> dict[str, Any]:
    """Key order and omissions of osbuild-composer's JSON (empty description/distro omitted)."""
    out: dict[str, Any] = {}
    for key in ORDER:
        if key in ALWAYS:
            out[key] = bp.get(key) or []
        elif bp.get(key) not in (None, "", [], {}):
            out[key] = bp[key]
    for key, value in bp.items():
        if key not in out and key not in ORDER and value not in (None, ""):
            out[key] = value
    return out


_SEMVER_PARTS = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def bump(old: str) -> str | None:
    """go-semver's BumpPatch: patch + 1, pre-release and build metadata dropped."""
    if not SEMVER.match(old):
        return None
    m = _SEMVER_PARTS.match(old)
    assert m is not None
    return f"{m.group(1)}.{m.group(2)}.{int(m.group(3)) + 1}"


# ---- TOML output (blueprints are small: strings, numbers, bools, lists, tables) -------------

def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(prefix: str, table: dict[str, Any], out: list[str]) -> None:
    subs = []
    for key, value in table.items():
        if isinstance(value, dict) or _is_table_list(value):
            subs.append((key, value))
        elif value is not None:
            out.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in subs:
        path = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if isinstance(value, dict):
            out.append(f"\n[{path}]")
            _table(path, value, out)
        else:
            for item in value:
                out.append(f"\n[[{path}]]")
                _table(path, item, out)


def to_toml(bp: dict[str, Any]) -> str:
    out: list[str] = []
    _table("", bp, out)
    return "\n".join(out).lstrip("\n") + "\n"
