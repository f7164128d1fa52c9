"""Map a blueprint field path (``customizations.user[1].name``) to its line in the source text.

``tomllib`` and ``json`` give no positions, yet every validation problem must name its line so a
user can jump to it. A full position-tracking parser would be overkill: blueprints are small and
written by hand, so a line scanner that follows table headers (``[a.b]``, ``[[a.b]]``), keys
(``k = v``, dotted keys) and inline arrays of tables (``packages = [{...}, {...}]``) is enough.
When a path is not found exactly, the nearest enclosing known path is used.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")
_JSON_KEY = re.compile(r'"([^"\\]+)"\s*:')


def _clean_key(raw: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in raw.split("."))


def toml_positions(text: str) -> dict[str, int]:
    """Return {field path: 1-based line} for every table header and key found in ``text``."""
    pos: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("#"):
            name = _clean_key(header.group(2))
            if header.group(1) == "[[":
                idx = counts.get(name, 0)
                counts[name] = idx + 1
                table = f"{name}[{idx}]"
            else:
                table = name
            pos.setdefault(table, lineno)
            pos.setdefault(name, lineno)
            continue
        key = _KEY.match(line)
        if key and not line.lstrip().startswith("#"):
            path = _clean_key(key.group(1))
            full = f"{table}.{path}" if table else path
            pos.setdefault(full, lineno)
            _inline_items(line, full, lineno, pos)
    return pos


def _inline_items(line: str, full: str, lineno: int, pos: dict[str, int]) -> None:
    """Positions of inline tables on one line: ``packages = [{name="a"}, {name="b"}]``."""
    rhs = line.split("=", 1)[1]
    for idx, _ in enumerate(re.finditer(r"\{", rhs)):
        pos.setdefault(f"{full}[{idx}]", lineno)


def json_positions(text: str) -> dict[str, int]:
    """Best effort for JSON blueprints: the first line where each key name appears."""
    pos: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        for match in _JSON_KEY.finditer(line):
            pos.setdefault(f"@{match.group(1)}", lineno)
    return pos


def locate(positions: dict[str, int], path: str) -> int | None:
    """Line of ``path`` or of its nearest enclosing table/key that was found."""
    candidate = path
    while candidate:
        if candidate in positions:
            return positions[candidate]
        # JSON mode: match on the last plain key name
        last = re.sub(r"\[\d+\]$", "", candidate.rsplit(".", 1)[-1])
        if f"@{last}" in positions:
            return positions[f"@{last}"]
        if candidate.endswith("]"):
            candidate = candidate[: candidate.rfind("[")]
        elif "." in candidate:
            candidate = candidate.rsplit(".", 1)[0]
        else:
            break
    return None
