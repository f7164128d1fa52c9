"""Users, groups and ssh keys, written with shadow's own tools (``useradd --prefix``).

Why ``--prefix`` and not ``--root``: ``--root`` chroots and needs a working shadow inside the
tree, ``--prefix`` edits the tree's /etc/{passwd,shadow,group,gshadow} from the host's tools,
so the same code serves the full edge profile and the tiny test profile.

Passwords: a plain-text password is hashed with SHA-512 crypt by ``openssl passwd -6`` (Python's
``crypt`` module is deprecated and gone in 3.13). The salt is derived from (image, user,
password) instead of being random, so an unchanged blueprint gives a byte-identical shadow file
and the cached tree keeps its root checksum; the salt still differs per user and per image.
Already-crypted values (``$6$``, ``$5$``, ``$y$``, ...) are kept as they are.

Home directories live in /var (``/home`` -> ``var/home``) which OSTree does not ship: they and
the users' ``authorized_keys`` are created at boot from a tmpfiles.d file this module writes.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.blueprint import Blueprint, User
from atomicedge.compose.ostreeprep import LINKS
from atomicedge.errors import UsageError

TMPFILES = "usr/lib/tmpfiles.d/atomicedge-users.conf"
SALT_CHARS = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SOURCE_DATE_EPOCH": "0", "LC_ALL": "C"}


def hash_password(password: str, salt_seed: str) -> str:
    """SHA-512 crypt of ``password`` (kept as-is when it already is a crypt string)."""
    if password.startswith("$") and password.count("$") >= 3:
        return password
    digest = hashlib.sha256(f"{salt_seed}\0{password}".encode()).digest()
    salt = "".join(SALT_CHARS[b % 64] for b in digest[:16])
    out = tool.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input_text=password,
                   what="openssl passwd -6").stdout.strip()
    if not out.startswith("$6$"):
        raise UsageError("openssl did not return a SHA-512 crypt hash")
    return out


def read_db(tree: Path, name: str) -> dict[str, list[str]]:
    """Entries of /etc/passwd or /etc/group in ``tree``: {name: fields}."""
    path = tree / "etc" / name
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            out[fields[0]] = fields
    return out


def _ensure_db(tree: Path) -> None:
    for name, mode in (("passwd", 0o644), ("group", 0o644), ("shadow", 0o640), ("gshadow", 0o640)):
        path = tree / "etc" / name
        if not path.exists():
            path.touch(mode=mode)


def add_group(tree: Path, name: str, gid: int | None) -> None:
    if name in read_db(tree, "group"):
        return
    argv = ["groupadd", "--prefix", str(tree)] + (["-g", str(gid)] if gid is not None else [])
    tool.run([*argv, name], what=f"groupadd {name}", env=ENV,
             hint="the gid may already be taken by a package's group")


def _useradd_argv(tree: Path, user: User, salt_seed: str) -> list[str]:
    argv = ["useradd", "--prefix", str(tree), "-M", "-d", user.home or f"/home/{user.name}",
            "-s", user.shell or "/bin/bash"]
    if user.uid is not None:
        argv += ["-u", str(user.uid)]
    if user.gid is not None:
        argv += ["-g", str(user.gid)]
    else:
        argv += ["-U"]
    if user.description:
        argv += ["-c", user.description]
    if user.groups:
        argv += ["-G", ",".join(user.groups)]
    if user.password:
        argv += ["-p", hash_password(user.password, f"{salt_seed}\0{user.name}")]
    if user.expiredate is not None:
        day = datetime.date(1970, 1, 1) + datetime.timedelta(days=user.expiredate)
        argv += ["-e", day.isoformat()]
    return [*argv, user.name]


def _modify_existing(tree: Path, user: User, salt_seed: str) -> None:
    """A user the packages already created (``root``): set password, shell, extra groups."""
    if user.uid is not None or user.gid is not None or user.home:
        raise UsageError(f"user {user.name} already exists in the image",
                         "uid, gid and home cannot be changed for it; drop them")
    argv = ["usermod", "--prefix", str(tree)]
    if user.password:
        argv += ["-p", hash_password(user.password, f"{salt_seed}\0{user.name}")]
    if user.shell:
        argv += ["-s", user.shell]
    if user.groups:
        argv += ["-a", "-G", ",".join(user.groups)]
    if user.description:
        argv += ["-c", user.description]
    if len(argv) > 3:
        tool.run([*argv, user.name], what=f"usermod {user.name}", env=ENV)


def add_user(tree: Path, user: User, salt_seed: str) -> None:
    groups = read_db(tree, "group")
    missing = [g for g in user.groups if g not in groups]
    if missing:
        raise UsageError(f"user {user.name}: group(s) {', '.join(missing)} "
                         "do not exist in the image",
                         "add [[customizations.group]] or install the package creating them")
    if user.gid is not None and not any(f[2] == str(user.gid) for f in groups.values()):
        add_group(tree, user.name, user.gid)
    if user.name in read_db(tree, "passwd"):
        _modify_existing(tree, user, salt_seed)
    else:
        tool.run(_useradd_argv(tree, user, salt_seed), what=f"useradd {user.name}", env=ENV)
    if user.force_password_reset:
        tool.run(["chage", "--root", str(tree), "-d", "0", user.name],
                 what=f"chage {user.name}", env=ENV)


def _under_var(path: str) -> str:
    """``/home/x`` -> ``/var/home/x`` (``/root`` -> ``/var/roothome``...): on the device those
    are links into /var that tmpfiles cannot follow before /var/home exists."""
    first, _, rest = path.strip("/").partition("/")
    target = LINKS.get(first)
    return "/" + "/".join(p for p in (target, rest) if p) if target else path


def _tmpfiles_lines(tree: Path, bp: Blueprint) -> list[str]:
    """Home directories and authorized_keys, created at first boot (they live in /var).

    ``f``, not ``f+``: the blueprint's keys seed the file once; keys added later on the device
    (Ignition, the administrator) are never overwritten at the next boot."""
    cust = bp.customizations
    keys: dict[str, list[str]] = {}
    for user in cust.users:
        if user.key:
            keys.setdefault(user.name, []).append(user.key)
    for sk in cust.sshkeys:
        keys.setdefault(sk.user, []).append(sk.key)
    passwd = read_db(tree, "passwd")
    out = []
    for name in [u.name for u in cust.users] + sorted(set(keys) - {u.name for u in cust.users}):
        fields = passwd[name]
        home = _under_var(fields[5])
        if name != "root":
            out.append(f"d {home} 0700 {name} {name} -")
        if name in keys:
            content = "\\n".join(keys[name]) + "\\n"
            out.append(f"d {home}/.ssh 0700 {name} {name} -")
            out.append(f"f {home}/.ssh/authorized_keys 0600 {name} {name} - {content}")
    return out


def apply(tree: Path, bp: Blueprint) -> None:
    cust = bp.customizations
    if not (cust.users or cust.groups or cust.sshkeys):
        return
    _ensure_db(tree)
    for group in cust.groups:
        add_group(tree, group.name, group.gid)
    for user in cust.users:
        add_user(tree, user, bp.name)
    lines = _tmpfiles_lines(tree, bp)
    if lines:
        path = tree / TMPFILES
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text("# created by atomicedge from the blueprint's users\n"
                        + "\n".join(lines) + "\n")
