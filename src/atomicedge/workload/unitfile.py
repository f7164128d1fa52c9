"""systemd unit files as Quadlet reads and writes them (stdlib only: runs in device images).

A :class:`UnitFile` keeps groups, keys, comments and their order, so a Quadlet source file can be
turned into a ``.service`` file that still carries the user's ``[Unit]``, ``[Service]`` and
``[Install]`` lines as written. Every key line remembers the file and line it came from, so an
error can name both. The splitting and escaping rules are systemd's (``extract_first_word`` with
the flags Quadlet uses; C escapes; ``ExecStart=`` quoting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atomicedge.errors import FormatError

WHITESPACE = " \t\n\r"


@dataclass
class Line:
    key: str
    value: str
    comment: bool = False
    origin: str = ""  # "path:line" of the source line ("" for generated lines)


@dataclass
class Group:
    name: str
    comments: list[Line] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)

    def find_last(self, key: str) -> Line | None:
        for line in reversed(self.lines):
            if not line.comment and line.key == key:
                return line
        return None


class UnitFile:
    """Ordered groups of ordered lines; groups with the same name are merged (like Quadlet)."""

    def __init__(self, filename: str = "", path: str = "") -> None:
        self.groups: list[Group] = []
        self.filename = filename
        self.path = path

    # -- structure ---------------------------------------------------------------------------

    def group(self, name: str) -> Group | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def ensure_group(self, name: str) -> Group:
        g = self.group(name)
        if g is None:
            g = Group(name)
            self.groups.append(g)
        return g

    def merge(self, other: UnitFile) -> None:
        for src in other.groups:
            g = self.ensure_group(src.name)
            g.comments += [Line(c.key, c.value, c.comment, c.origin) for c in src.comments]
            g.lines += [Line(c.key, c.value, c.comment, c.origin) for c in src.lines]

    def dup(self) -> UnitFile:
        copy = UnitFile(self.filename)
        copy.merge(self)
        return copy

    def rename_group(self, old: str, new: str) -> None:
        g = self.group(old)
        if g is None:
            return
        target = self.group(new)
        if target is None:
            g.name = new
        elif target is not g:
            target.comments += g.comments
            target.lines += g.lines
            self.groups.remove(g)

    def key_lines(self, group: str) -> list[Line]:
        g = self.group(group)
        return [ln for ln in g.lines if not ln.comment] if g else []

    # -- lookups (Quadlet's semantics) -------------------------------------------------------

    def has_key(self, group: str, key: str) -> bool:
        g = self.group(group)
        return g is not None and g.find_last(key) is not None

    def lookup_line(self, group: str, key: str) -> Line | None:
        g = self.group(group)
        return g.find_last(key) if g else None

    def lookup(self, group: str, key: str) -> str | None:
        """Last value, trailing space trimmed, one pair of surrounding double quotes removed."""
        line = self.lookup_line(group, key)
        if line is None:
            return None
        v = line.value.rstrip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        return v

    def lookup_bool(self, group: str, key: str) -> bool | None:
        v = self.lookup(group, key)
        if v is None:
            return None
        return v.lower() in ("1", "yes", "true", "on")

    def lookup_all_lines(self, group: str, key: str) -> list[Line]:
        """Every value of ``key``; an empty assignment clears the ones before it."""
        out: list[Line] = []
        for line in self.key_lines(group):
            if line.key == key:
                out = [] if line.value == "" else [*out, line]
        return out

    def lookup_all(self, group: str, key: str) -> list[str]:
        return [ln.value for ln in self.lookup_all_lines(group, key)]

    def lookup_all_strv(self, group: str, key: str) -> list[str]:
        """Space-separated words, quotes removed, backslashes kept (systemd's strv keys)."""
        words: list[str] = []
        for line in self.lookup_all_lines(group, key):
            words += split_words(line.value, unescape=False, where=line.origin)
        return words

    def lookup_all_args(self, group: str, key: str) -> list[str]:
        """Exec-like words (quotes removed, C escapes applied) of every value."""
        words: list[str] = []
        for line in self.lookup_all_lines(group, key):
            words += split_words(line.value, unescape=True, where=line.origin)
        return words

    def lookup_last_args(self, group: str, key: str) -> list[str] | None:
        line = self.lookup_line(group, key)
        return None if line is None else split_words(line.value, unescape=True,
                                                     where=line.origin)

    def lookup_all_keyval(self, group: str, key: str) -> dict[str, str | None]:
        """``Environment=``-style ``K=V`` words of every value (a later K wins)."""
        res: dict[str, str | None] = {}
        for word in self.lookup_all_args(group, key):
            k, sep, v = word.partition("=")
            res[k] = v if sep else None
        return res

    # -- edits -------------------------------------------------------------------------------

    def add(self, group: str, key: str, value: str) -> None:
        self.ensure_group(group).lines.append(Line(key, value))

    def set(self, group: str, key: str, value: str) -> None:
        g = self.ensure_group(group)
        line = g.find_last(key)
        if line is None:
            g.lines.append(Line(key, value))
        else:
            line.value = value

    def unset(self, group: str, key: str) -> None:
        g = self.group(group)
        if g is not None:
            g.lines = [ln for ln in g.lines if ln.comment or ln.key != key]

    def prepend(self, group: str, key: str, value: str) -> None:
        self.ensure_group(group).lines.insert(0, Line(key, value))

    def add_cmdline(self, group: str, key: str, args: list[str]) -> None:
        self.add(group, key, escape_words(args))

    def add_escaped(self, group: str, key: str, value: str) -> None:
        self.add(group, key, f'"{_escape(value)}"' if _needs_escape(value) else value)

    def prepend_comment(self, *comments: str) -> None:
        g = self.groups[0] if self.groups else self.ensure_group("")
        g.comments[:0] = [Line("", "# " + c if c else "#", True) for c in comments]

    # -- text --------------------------------------------------------------------------------

    def to_string(self) -> str:
        out: list[str] = []
        for i, g in enumerate(self.groups):
            if i:
                out.append("")
            out += [c.value for c in g.comments]
            if not g.name:
                continue
            out.append(f"[{g.name}]")
            out += [ln.value if ln.comment else f"{ln.key}={ln.value}" for ln in g.lines]
        return "\n".join(out) + "\n"


# -- parsing -----------------------------------------------------------------------------------

def _is_comment(line: str) -> bool:
    return not line or line[0] in "#;"


def _group_name(line: str) -> str | None:
    if not line.startswith("["):
        return None
    end = line.find("]")
    if end == -1 or line[end + 1:].strip(" \t"):
        return None
    return line[1:end]


def parse(text: str, path: str) -> UnitFile:
    """Parse unit-file text; a malformed line is a FormatError naming ``path:line``."""
    unit = UnitFile(path.rsplit("/", 1)[-1], path)
    current: Group | None = None
    pending: list[Line] = []
    raw_lines = text.removesuffix("\n").split("\n")
    remaining, start = "", 0
    for idx, raw in enumerate(raw_lines):
        line = raw.strip()
        if _is_comment(line):
            if remaining:
                continue  # a comment inside a continued line is dropped
        else:
            if line.endswith("\\") and idx != len(raw_lines) - 1:
                if not remaining:
                    start = idx + 1
                remaining += line[:-1]
                continue
            if line.endswith("\\"):
                line = line[:-1]
            if remaining:
                line, remaining = remaining + line, ""
            else:
                start = idx + 1
        where = f"{path}:{start if not _is_comment(line) else idx + 1}"
        if _is_comment(line):
            pending.append(Line("", line, True, where))
            continue
        name = _group_name(line)
        if name is not None:
            if not name or any(c in "[]" or ord(c) < 32 for c in name):
                raise FormatError(f"{where}: invalid group name [{name}]",
                                  "group names look like [Container]")
            current = unit.ensure_group(name)
            if pending and pending[0].value == "":
                pending = pending[1:]
            current.comments += pending
            pending = []
            continue
        eq = line.find("=")
        if eq <= 0:
            raise FormatError(f"{where}: “{line}” is not a key=value pair, [group] or comment",
                              "unit files hold [Group] lines, Key=value lines and # comments")
        if current is None:
            raise FormatError(f"{where}: key {line[:eq].strip()!r} before any [group]",
                              "start the file with a group such as [Container]")
        key, value = line[:eq].rstrip(), line[eq + 1:].lstrip()
        current.lines += pending
        pending = []
        current.lines.append(Line(key, value, False, where))
    if current is None:
        current = unit.ensure_group("")
    current.lines += pending
    return unit


# -- words: systemd's extract_first_word with Quadlet's flag sets ------------------------------

_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", '"': '"', "'": "'", "s": " "}
_HEX = "0123456789abcdefABCDEF"


def _cunescape(s: str, i: int) -> tuple[str, int] | None:
    """Decode the escape after the backslash at ``s[i]``: (text, chars consumed) or None."""
    c = s[i] if i < len(s) else ""
    if c in _SIMPLE and c:
        return _SIMPLE[c], 1
    width = {"x": 2, "u": 4, "U": 8}.get(c)
    if width:
        digits = s[i + 1:i + 1 + width]
        if len(digits) != width or any(d not in _HEX for d in digits):
            return None
        code = int(digits, 16)
        if code == 0 or code > 0x10FFFF:
            return None
        return chr(code), 1 + width
    if c and c in "01234567":
        digits = s[i:i + 3]
        if len(digits) != 3 or any(d not in "01234567" for d in digits):
            return None
        code = int(digits, 8)
        return (chr(code), 3) if 0 < code <= 255 else None
    return None


def split_words(value: str, *, unescape: bool, where: str = "") -> list[str]:
    """Split like systemd: whitespace separates, quotes group (and are removed).

    ``unescape``: backslash starts a C escape (exec lines, ``Environment=``); otherwise
    backslashes are ordinary characters (strv keys such as ``WantedBy=``). An unknown escape
    is an error naming ``where``; an unbalanced quote ends the word (systemd's relaxed mode).
    """
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in WHITESPACE:
            i += 1
        if i >= n:
            return words
        out: list[str] = []
        quote = ""
        while i < n:
            c = value[i]
            if c == "\\" and unescape:
                if i + 1 >= n:
                    i = n
                    break
                dec = _cunescape(value, i + 1)
                if dec is None:
                    raise FormatError(f"{where}: unsupported escape \\{value[i + 1]} in {value!r}",
                                      "write a literal backslash as \\\\")
                out.append(dec[0])
                i += 1 + dec[1]
            elif quote:
                if c == quote:
                    quote = ""
                else:
                    out.append(c)
                i += 1
            elif c in "'\"":
                quote = c
                i += 1
            elif c in WHITESPACE:
                break
            else:
                out.append(c)
                i += 1
        words.append("".join(out))


def _needs_escape(word: str) -> bool:
    return any(c in " \"'\\" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in word
               if ord(c) <= 128)


_ESC = {"\a": "\\a", "\b": "\\b", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
        "\f": "\\f", "\\": "\\\\", " ": "\\x20", '"': '\\"', "'": "'"}


def _escape(word: str) -> str:
    out = []
    for c in word:
        if ord(c) > 128 or not (c in " \"'\\" or c.isspace() or ord(c) < 32 or ord(c) == 127):
            out.append(c)
        else:
            out.append(_ESC.get(c, f"\\x{ord(c):02x}"))
    return "".join(out)


def escape_words(words: list[str]) -> str:
    """One ``ExecStart=`` value that systemd splits back into exactly ``words``."""
    return " ".join(f'"{_escape(w)}"' if _needs_escape(w) or w == "" else w for w in words)
