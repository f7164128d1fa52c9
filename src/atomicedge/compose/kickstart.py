"""Kickstart files for the ``edge-installer`` (seeds 000, 002, 004): parse, check, refuse.

The installer carries out what an image-based install needs: ``ostreesetup`` (once, required),
``user``, ``sshkey``, ``rootpw``, ``%post`` scripts and how it finishes (``poweroff``,
``reboot``, ``halt``). The disk layout is the installer's own (the whole target disk, as
``edge-raw-image``), so the layout commands of the seeds (``zerombr``, ``clearpart --all``,
``autopart``) and the console/locale ones (``text``, ``lang``, ``keyboard``, ``timezone``,
``network --bootproto=dhcp``) are accepted and recorded in :attr:`Kickstart.accepted`.
Anything else -- ``%packages`` (an OSTree commit is the package set), ``%pre``, ``%include``,
``part``, unknown commands or options -- is refused with its line number and a hint, so an
install never silently drops a line of the user's file.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from atomicedge.errors import UsageError


@dataclass(frozen=True)
class OstreeSetup:
    osname: str
    url: str
    ref: str
    remote: str
    gpg: bool
    line: int = field(default=0, compare=False)     # where the ostreesetup line stands


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    password: str | None = None
    iscrypted: bool = False
    lock: bool = False
    homedir: str | None = None
    uid: int | None = None
    gid: int | None = None
    shell: str | None = None
    gecos: str | None = None


@dataclass(frozen=True)
class Script:
    line: int                  # where ``%post`` stands
    body: str
    interpreter: str = "/bin/sh"
    erroronfail: bool = False
    log: str | None = None


@dataclass
class Kickstart:
    ostree: OstreeSetup
    users: list[User] = field(default_factory=list)
    sshkeys: list[tuple[str, str]] = field(default_factory=list)   # (user, key)
    rootpw: User | None = None     # name "root"; password/iscrypted/lock as for users
    posts: list[Script] = field(default_factory=list)
    finish: str = "poweroff"       # the seeds' choice for an unattended install
    accepted: list[str] = field(default_factory=list)   # "LINE: text" recorded, not acted on


# option tables: name -> takes a value
_OSTREE = {"osname": True, "url": True, "ref": True, "remote": True, "nogpg": False}
_USER = {"name": True, "groups": True, "password": True, "iscrypted": False,
         "plaintext": False, "lock": False, "homedir": True, "uid": True, "gid": True,
         "shell": True, "gecos": True}
_ROOTPW = {"iscrypted": False, "plaintext": False, "lock": False}
_SSHKEY = {"username": True}
_POST = {"interpreter": True, "erroronfail": False, "log": True}
# accepted as-is: what the installer does anyway, or console/locale settings
_ACCEPTED = {"text": {}, "cmdline": {}, "skipx": {}, "lang": {}, "timezone":
             {"utc": False, "isUtc": False}, "zerombr": {}, "clearpart": {"all": False,
             "initlabel": False}, "autopart": {"type": True, "fstype": True, "nohome": False,
             "nolvm": False, "noswap": False}, "network": {"bootproto": True, "noipv6": False,
             "onboot": True, "activate": False, "device": True, "hostname": True},
             "firewall": {"enabled": False, "disabled": False, "service": True},
             "services": {"enabled": True, "disabled": True}, "selinux": {"disabled": False,
             "permissive": False, "enforcing": False}, "eula": {"agreed": False},
             "firstboot": {"disable": False, "disabled": False},
             "keyboard": {"vckeymap": True, "xlayouts": True}}
_FINISH = ("poweroff", "reboot", "halt", "shutdown")
HINT = "see docs/provisioning.md for what the edge installer supports"


class _Ctx:
    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, line: int, message: str, hint: str = HINT) -> UsageError:
        return UsageError(f"{self.name}:{line}: {message}", hint)


def _options(ctx: _Ctx, line: int, cmd: str, words: list[str],
             table: dict[str, bool]) -> tuple[dict[str, str | bool], list[str]]:
    """``--opt=value`` / ``--opt value`` / ``--flag`` -> (options, positional words)."""
    opts: dict[str, str | bool] = {}
    args: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("--"):
            args.append(word)
            continue
        name, eq, value = word[2:].partition("=")
        if name not in table:
            known = ", ".join(f"--{k}" for k in sorted(table)) or "none"
            raise ctx.fail(line, f"{cmd}: option --{name} is not supported",
                           f"{cmd} takes: {known}")
        if name in opts:
            raise ctx.fail(line, f"{cmd}: --{name} is given twice", "give it once")
        if table[name]:
            if not eq:
                if i >= len(words):
                    raise ctx.fail(line, f"{cmd}: --{name} needs a value", f"--{name}=VALUE")
                value = words[i]
                i += 1
            opts[name] = value
        elif eq:
            raise ctx.fail(line, f"{cmd}: --{name} takes no value", f"write just --{name}")
        else:
            opts[name] = True
    return opts, args


def _need(ctx: _Ctx, line: int, cmd: str, opts: dict[str, str | bool], name: str) -> str:
    value = opts.get(name)
    if not isinstance(value, str) or not value:
        raise ctx.fail(line, f"{cmd}: --{name}= is required", f"add --{name}=...")
    return value


def _int(ctx: _Ctx, line: int, cmd: str, value: str | bool | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise ctx.fail(line, f"{cmd}: {value!r} is not a number", "give a decimal id")
    return int(value)


def _ostreesetup(ctx: _Ctx, line: int, words: list[str]) -> OstreeSetup:
    opts, args = _options(ctx, line, "ostreesetup", words, _OSTREE)
    if args:
        raise ctx.fail(line, f"ostreesetup: unexpected {args[0]!r}", "options only")
    url = _need(ctx, line, "ostreesetup", opts, "url")
    if url.split("://", 1)[0] not in ("http", "https", "file") or "://" not in url:
        raise ctx.fail(line, f"ostreesetup: --url={url} is not http(s):// or file://",
                       "the repository URL the installer pulls from")
    return OstreeSetup(_need(ctx, line, "ostreesetup", opts, "osname"), url,
                       _need(ctx, line, "ostreesetup", opts, "ref"),
                       str(opts.get("remote") or _need(ctx, line, "ostreesetup", opts,
                                                       "osname")),
                       gpg=not opts.get("nogpg"), line=line)


def _user(ctx: _Ctx, line: int, words: list[str]) -> User:
    opts, args = _options(ctx, line, "user", words, _USER)
    if args:
        raise ctx.fail(line, f"user: unexpected {args[0]!r}", "options only, e.g. --name=core")
    password = opts.get("password")
    return User(name=_need(ctx, line, "user", opts, "name"),
                groups=tuple(g for g in str(opts.get("groups") or "").split(",") if g),
                password=password if isinstance(password, str) else None,
                iscrypted=bool(opts.get("iscrypted")), lock=bool(opts.get("lock")),
                homedir=str(opts["homedir"]) if "homedir" in opts else None,
                uid=_int(ctx, line, "user", opts.get("uid")),
                gid=_int(ctx, line, "user", opts.get("gid")),
                shell=str(opts["shell"]) if "shell" in opts else None,
                gecos=str(opts["gecos"]) if "gecos" in opts else None)


def _rootpw(ctx: _Ctx, line: int, words: list[str]) -> User:
    opts, args = _options(ctx, line, "rootpw", words, _ROOTPW)
    if len(args) > 1 or (not args and not opts.get("lock")):
        raise ctx.fail(line, "rootpw: give one password (or --lock)", "rootpw --lock")
    return User("root", password=args[0] if args else None,
                iscrypted=bool(opts.get("iscrypted")), lock=bool(opts.get("lock")))


def _sshkey(ctx: _Ctx, line: int, words: list[str]) -> tuple[str, str]:
    opts, args = _options(ctx, line, "sshkey", words, _SSHKEY)
    if len(args) != 1 or len(args[0].split()) < 2:
        raise ctx.fail(line, "sshkey: give the key as one quoted argument",
                       'sshkey --username=core "ssh-ed25519 AAAA... comment"')
    return _need(ctx, line, "sshkey", opts, "username"), args[0]


def parse(text: str, name: str = "ks.cfg") -> Kickstart:
    """Kickstart text -> :class:`Kickstart`; the first unsupported line raises UsageError."""
    ctx = _Ctx(name)
    lines = text.splitlines()
    ostree: OstreeSetup | None = None
    ks = Kickstart(OstreeSetup("", "", "", "", True))
    i = 0
    while i < len(lines):
        no, raw = i + 1, lines[i].strip()
        i += 1
        if not raw or raw.startswith("#"):
            continue
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise ctx.fail(no, f"cannot split the line: {exc}", "check the quotes") from None
        if not words:
            continue
        cmd, rest = words[0], words[1:]
        if cmd.startswith("%"):
            i = _section(ctx, ks, lines, i, no, cmd, rest)
        elif cmd == "ostreesetup":
            if ostree is not None:
                raise ctx.fail(no, "ostreesetup is given twice", "install one commit")
            ostree = _ostreesetup(ctx, no, rest)
        elif cmd == "user":
            ks.users.append(_user(ctx, no, rest))
        elif cmd == "rootpw":
            ks.rootpw = _rootpw(ctx, no, rest)
        elif cmd == "sshkey":
            ks.sshkeys.append(_sshkey(ctx, no, rest))
        elif cmd in _FINISH:
            _options(ctx, no, cmd, rest, {"eject": False})
            ks.finish = "poweroff" if cmd == "shutdown" else cmd
        elif cmd in _ACCEPTED:
            _options(ctx, no, cmd, [w for w in rest if w.startswith("--")], _ACCEPTED[cmd])
            ks.accepted.append(f"{no}: {raw}")
        else:
            raise ctx.fail(no, f"command {cmd!r} is not supported by the edge installer")
    if ostree is None:
        raise ctx.fail(len(lines) or 1, "no ostreesetup line",
                       "add: ostreesetup --osname=OS --url=URL --ref=REF [--nogpg]")
    ks.ostree = ostree
    users = {u.name for u in ks.users} | {"root"}
    for user, _key in ks.sshkeys:
        if user not in users:
            raise ctx.fail(_line_of(lines, "sshkey", user), f"sshkey: user {user!r} is not "
                           "created by this kickstart", f"add: user --name={user}")
    return ks


def _line_of(lines: list[str], cmd: str, word: str) -> int:
    return next((n + 1 for n, ln in enumerate(lines)
                 if ln.strip().startswith(cmd) and word in ln), 1)


def _section(ctx: _Ctx, ks: Kickstart, lines: list[str], i: int, no: int, cmd: str,
             rest: list[str]) -> int:
    """A ``%post ... %end`` script (its body verbatim); other sections are refused."""
    if cmd != "%post":
        what = {"%packages": "an OSTree commit is the package set: add packages to the "
                             "blueprint", "%include": "inline the included file"}
        raise ctx.fail(no, f"{cmd} is not supported by the edge installer",
                       what.get(cmd, "use %post for scripts"))
    if "--nochroot" in rest:
        raise ctx.fail(no, "%post --nochroot is not supported",
                       "scripts run inside the installed system")
    opts, args = _options(ctx, no, "%post", rest, _POST)
    if args:
        raise ctx.fail(no, f"%post: unexpected {args[0]!r}", "options only")
    body: list[str] = []
    while i < len(lines):
        if lines[i].strip() == "%end":
            ks.posts.append(Script(no, "\n".join(body) + "\n",
                                   str(opts.get("interpreter") or "/bin/sh"),
                                   bool(opts.get("erroronfail")),
                                   str(opts["log"]) if "log" in opts else None))
            return i + 1
        if lines[i].strip().startswith(("%post", "%pre", "%packages")):
            break
        body.append(lines[i])
        i += 1
    raise ctx.fail(no, "%post has no %end", "close the script with a line %end")


def parse_file(path: Path) -> Kickstart:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "give a readable kickstart") from None
    return parse(text, path.name)
