"""Fedora CoreOS Config (Butane YAML, ``variant: fcos``) to Ignition JSON, on the build host.

Butane is not packaged in Debian 12; this converts the part of the ``fcos`` variant that the
device applier (:mod:`atomicedge.device.ignition`) carries out: ``passwd.users`` and
``passwd.groups``, ``storage.files`` (``contents``/``append`` as ``inline``, ``local`` or
``source``), ``storage.directories``, ``storage.links`` and ``systemd.units`` (``contents``,
``enabled``, ``mask``, ``dropins``). Anything else is refused with its YAML line and a hint,
so a config never silently loses a key. The output is checked by Debian's
``ignition-validate`` (package ``ignition``) when it is installed: :func:`validate`.
"""

from __future__ import annotations

import json
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atomicedge import runner
from atomicedge.errors import UsageError

# fcos variant version -> Ignition spec version it produces (Butane's table)
SPEC_FOR = {"1.0.0": "3.0.0", "1.1.0": "3.1.0", "1.2.0": "3.2.0", "1.3.0": "3.2.0",
            "1.4.0": "3.3.0", "1.5.0": "3.4.0"}
HINT_VERSION = "use `variant: fcos` with `version: 1.4.0` (Ignition 3.3.0) or 1.5.0 (3.4.0)"
Path_ = tuple[str | int, ...]


@dataclass
class Doc:
    """The parsed YAML with the line of every node, for error messages."""

    name: str
    data: Any
    lines: dict[Path_, int]
    files_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def where(self, path: Path_) -> str:
        while path and path not in self.lines:
            path = path[:-1]
        dotted = ".".join(str(p) for p in path) or "(top)"
        return f"{self.name}:{self.lines.get(path, 1)}: {dotted}"

    def fail(self, path: Path_, message: str, hint: str) -> UsageError:
        return UsageError(f"{self.where(path)}: {message}", hint)


def load_yaml(text: str, name: str) -> Doc:
    """Parse YAML keeping the line of each key and item; duplicate keys are refused."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        data = _build(loader, node, (), lines, name) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{name}:{line}: not valid YAML: {problem}",
                         "check the indentation and quoting on that line") from None
    finally:
        loader.dispose()
    return Doc(name, data, lines)


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict[Path_, int],
           name: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, str):
                raise UsageError(f"{name}:{knode.start_mark.line + 1}: key {key!r} is not a "
                                 "string", "quote it or use a field name")
            if key in out:
                raise UsageError(f"{name}:{knode.start_mark.line + 1}: duplicate key {key!r}",
                                 "give each key once")
            out[key] = _build(loader, vnode, (*path, key), lines, name)
            lines[(*path, key)] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), lines, name) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# -- field tables: fcos key -> (ignition key, converter) ------------------------------------

Conv = Callable[[Doc, Any, Path_], Any]


def _typed(kind: type, label: str) -> Conv:
    def conv(doc: Doc, value: Any, path: Path_) -> Any:
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise doc.fail(path, f"must be {label}, not {type(value).__name__} {value!r}",
                           f"write {label} here")
        return value
    return conv


STR, INT, BOOL = _typed(str, "a string"), _typed(int, "an integer"), _typed(bool, "true/false")


def _str_list(doc: Doc, value: Any, path: Path_) -> list[str]:
    if not isinstance(value, list):
        raise doc.fail(path, "must be a list of strings", "write one `- item` per line")
    return [STR(doc, v, (*path, i)) for i, v in enumerate(value)]


def _obj(table: dict[str, tuple[str, Conv]], required: tuple[str, ...] = ()) -> Conv:
    def conv(doc: Doc, value: Any, path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise doc.fail(path, "must be a mapping", "write `key: value` lines under it")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key not in table:
                known = ", ".join(sorted(table))
                raise doc.fail((*path, key), f"unknown or unsupported key {key!r}",
                               f"supported here: {known} (docs/provisioning.md)")
            if item is None:
                continue
            ign_key, sub = table[key]
            out[ign_key] = sub(doc, item, (*path, key))
        for key in required:
            if table[key][0] not in out:
                raise doc.fail(path, f"{key!r} is required", f"add `{key}:`")
        return out
    return conv


def _list_of(conv: Conv) -> Conv:
    def lst(doc: Doc, value: Any, path: Path_) -> list[Any]:
        if not isinstance(value, list):
            raise doc.fail(path, "must be a list", "write one `- ` item per entry")
        return [conv(doc, v, (*path, i)) for i, v in enumerate(value)]
    return lst


def _abs_path(doc: Doc, value: Any, path: Path_) -> str:
    text = STR(doc, value, path)
    if not text.startswith("/") or ".." in text.split("/"):
        raise doc.fail(path, f"{text!r} is not an absolute path without '..'",
                       "write the full path on the device, e.g. /etc/motd")
    return text


def _mode(doc: Doc, value: Any, path: Path_) -> int:
    mode = INT(doc, value, path)
    if not 0 <= mode <= 0o7777:
        raise doc.fail(path, f"mode {mode} is out of range",
                       "write it in octal with a leading 0, e.g. 0644")
    return mode


def data_url(data: bytes) -> str:
    """An RFC 2397 ``data:`` URL: percent-encoded text, base64 for binary content."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        import base64
        return "data:;base64," + base64.b64encode(data).decode("ascii")
    return "data:," + urllib.parse.quote(text, safe="")


def _resource(doc: Doc, value: Any, path: Path_) -> dict[str, Any]:
    raw = _obj({"source": ("source", STR), "inline": ("inline", STR), "local": ("local", STR),
                "compression": ("compression", STR),
                "verification": ("verification", _obj({"hash": ("hash", STR)}))})(doc, value, path)
    given = [k for k in ("source", "inline", "local") if k in raw]
    if len(given) > 1:
        raise doc.fail(path, f"{' and '.join(given)} are given together",
                       "give exactly one of source, inline, local")
    if "inline" in raw:
        raw["source"] = data_url(raw.pop("inline").encode("utf-8"))
    elif "local" in raw:
        raw["source"] = data_url(_read_local(doc, raw.pop("local"), (*path, "local")))
    if "compression" in raw and raw["compression"] not in ("", "gzip"):
        raise doc.fail((*path, "compression"), f"compression {raw['compression']!r} is unknown",
                       "use gzip or leave it out")
    return raw


def _read_local(doc: Doc, rel: str, path: Path_) -> bytes:
    if doc.files_dir is None:
        raise doc.fail(path, "`local` needs a files directory", "pass --files-dir DIR")
    base = doc.files_dir.resolve()
    target = (base / rel).resolve()
    if rel.startswith("/") or not target.is_relative_to(base):
        raise doc.fail(path, f"{rel!r} leaves the files directory",
                       "give a path relative to --files-dir, without '..'")
    try:
        return target.read_bytes()
    except OSError as exc:
        raise doc.fail(path, f"cannot read {target}: {exc.strerror}",
                       "check the file exists under --files-dir") from None


_OWNER = _obj({"id": ("id", INT), "name": ("name", STR)})
_NODE = {"path": ("path", _abs_path), "overwrite": ("overwrite", BOOL),
         "user": ("user", _OWNER), "group": ("group", _OWNER)}
_FILE = _obj({**_NODE, "mode": ("mode", _mode), "contents": ("contents", _resource),
              "append": ("append", _list_of(_resource))}, ("path",))
_DIR = _obj({**_NODE, "mode": ("mode", _mode)}, ("path",))
_LINK = _obj({**_NODE, "target": ("target", STR), "hard": ("hard", BOOL)}, ("path", "target"))
_USER = _obj({"name": ("name", STR), "password_hash": ("passwordHash", STR),
              "ssh_authorized_keys": ("sshAuthorizedKeys", _str_list), "uid": ("uid", INT),
              "gecos": ("gecos", STR), "home_dir": ("homeDir", STR),
              "no_create_home": ("noCreateHome", BOOL), "primary_group": ("primaryGroup", STR),
              "groups": ("groups", _str_list), "no_user_group": ("noUserGroup", BOOL),
              "no_log_init": ("noLogInit", BOOL), "shell": ("shell", STR),
              "system": ("system", BOOL), "should_exist": ("shouldExist", BOOL)}, ("name",))
_GROUP = _obj({"name": ("name", STR), "gid": ("gid", INT), "password_hash": ("passwordHash", STR),
               "system": ("system", BOOL), "should_exist": ("shouldExist", BOOL)}, ("name",))
_DROPIN = _obj({"name": ("name", STR), "contents": ("contents", STR)}, ("name",))
_UNIT = _obj({"name": ("name", STR), "enabled": ("enabled", BOOL), "mask": ("mask", BOOL),
              "contents": ("contents", STR), "dropins": ("dropins", _list_of(_DROPIN))},
             ("name",))
_TOP = _obj({
    "variant": ("variant", STR), "version": ("version", STR),
    "passwd": ("passwd", _obj({"users": ("users", _list_of(_USER)),
                               "groups": ("groups", _list_of(_GROUP))})),
    "storage": ("storage", _obj({"files": ("files", _list_of(_FILE)),
                                 "directories": ("directories", _list_of(_DIR)),
                                 "links": ("links", _list_of(_LINK))})),
    "systemd": ("systemd", _obj({"units": ("units", _list_of(_UNIT))})),
})

UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|timer|path|mount|"
                       r"automount|swap|slice|scope|device)$")


def convert(text: str, name: str = "config.bu", *, files_dir: Path | None = None,
            strict: bool = False) -> tuple[dict[str, Any], list[str]]:
    """FCC YAML text -> (Ignition config dict, warnings); ``strict`` turns warnings into errors."""
    doc = load_yaml(text, name)
    doc.files_dir = files_dir
    if not isinstance(doc.data, dict):
        raise doc.fail((), "the config must be a YAML mapping",
                       "start with `variant: fcos` and `version: 1.4.0`")
    if doc.data.get("variant") != "fcos":
        raise doc.fail(("variant",), f"variant {doc.data.get('variant')!r} is not supported",
                       HINT_VERSION)
    version = str(doc.data.get("version"))
    if version not in SPEC_FOR:
        raise doc.fail(("version",), f"fcos version {version!r} is not supported", HINT_VERSION)
    body = _TOP(doc, doc.data, ())
    body.pop("variant"), body.pop("version")
    _check(doc, body)
    if strict and doc.warnings:
        raise UsageError(doc.warnings[0], "fix it, or convert without --strict")
    return {"ignition": {"version": SPEC_FOR[version]}, **body}, doc.warnings


def _check(doc: Doc, body: dict[str, Any]) -> None:
    """Cross-field rules: unique paths and unit names, units' names and [Install] sections."""
    seen: dict[str, Path_] = {}
    storage = body.get("storage", {})
    for kind in ("files", "directories", "links"):
        for i, entry in enumerate(storage.get(kind, [])):
            where = ("storage", kind, i, "path")
            if entry["path"] in seen:
                raise doc.fail(where, f"path {entry['path']} is configured twice",
                               "give each path once")
            seen[entry["path"]] = where
    names: set[str] = set()
    for i, unit in enumerate(body.get("systemd", {}).get("units", [])):
        where = ("systemd", "units", i, "name")
        if not UNIT_NAME.match(unit["name"]) or unit["name"] in names:
            raise doc.fail(where, f"unit name {unit['name']!r} is invalid or repeated",
                           "a unit name like hello.service, once")
        names.add(unit["name"])
        if unit.get("enabled") and "contents" in unit and "[Install]" not in unit["contents"]:
            doc.warnings.append(f"{doc.where(where)}: unit {unit['name']} is enabled but has no "
                                "[Install] section, so enabling does nothing")


def convert_file(src: Path, *, files_dir: Path | None = None,
                 strict: bool = False) -> tuple[str, list[str]]:
    """Read an FCC file; return the Ignition JSON text (pretty, newline-terminated)."""
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {src}: {exc}", "give a readable UTF-8 YAML file") from None
    config, warnings = convert(text, src.name, files_dir=files_dir, strict=strict)
    return json.dumps(config, indent=2) + "\n", warnings


def validate(ign_text: str) -> None:
    """Debian's ``ignition-validate`` on the output; any warning counts as a failure.

    Debian 12's Ignition (2.14) knows specs up to 3.3.0. A 3.4.0 config made here uses only
    fields whose schema 3.4.0 keeps unchanged, so it is checked as 3.3.0.
    """
    config = json.loads(ign_text)
    if config.get("ignition", {}).get("version") == "3.4.0":
        config["ignition"]["version"] = "3.3.0"
        ign_text = json.dumps(config)
    with tempfile.NamedTemporaryFile("w", suffix=".ign") as tmp:
        tmp.write(ign_text)
        tmp.flush()
        proc = runner.run(["ignition-validate", tmp.name], what="ignition-validate",
                          check=False, timeout=60)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0 or problems:
        raise UsageError("ignition-validate refused the config: " + " | ".join(problems[:4]),
                         "fix the FCC fields named above")
