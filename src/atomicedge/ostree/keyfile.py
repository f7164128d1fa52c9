"""GKeyFile (``.desktop``-style ini) reader/writer used by repo ``config`` and ``.origin`` files.

Order of groups and keys, and unknown keys, are preserved on rewrite so a file written by
``ostree`` (or rpm-ostree's extra origin keys) survives a round trip through atomicedge.
"""

from __future__ import annotations

from pathlib import Path

from atomicedge.errors import FormatError


class KeyFile:
    def __init__(self) -> None:
        self.groups: dict[str, dict[str, str]] = {}

    @classmethod
    def parse(cls, text: str, *, source: str = "keyfile") -> KeyFile:
        kf = cls()
        group: dict[str, str] | None = None
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s.startswith("["):
                if not s.endswith("]") or len(s) < 3:
                    raise FormatError(f"{source}:{lineno}: malformed group header {s!r}")
                group = kf.groups.setdefault(s[1:-1], {})
                continue
            if "=" not in s or group is None:
                raise FormatError(f"{source}:{lineno}: expected KEY=VALUE inside a [group]",
                                  "check the file for a stray line")
            key, _, value = s.partition("=")
            group[key.strip()] = value.strip()
        return kf

    @classmethod
    def load(cls, path: Path) -> KeyFile:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: not UTF-8 text") from exc
        return cls.parse(text, source=str(path))

    def dump(self) -> str:
        out: list[str] = []
        for name, keys in self.groups.items():
            if out:
                out.append("")
            out.append(f"[{name}]")
            out.extend(f"{k}={v}" for k, v in keys.items())
        return "\n".join(out) + "\n"

    def get(self, group: str, key: str, default: str | None = None) -> str | None:
        return self.groups.get(group, {}).get(key, default)

    def get_bool(self, group: str, key: str, default: bool) -> bool:
        v = self.get(group, key)
        if v is None:
            return default
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise FormatError(f"[{group}] {key}={v!r} is not a boolean", "use true or false")

    def set(self, group: str, key: str, value: str) -> None:
        self.groups.setdefault(group, {})[key] = value

    def remove_group(self, group: str) -> bool:
        return self.groups.pop(group, None) is not None
