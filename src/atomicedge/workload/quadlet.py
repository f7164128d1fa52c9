"""The Quadlet systemd generator for Debian 12 (podman 4.3.1 predates Quadlet).

Installed as ``/usr/lib/systemd/system-generators/podman-system-generator`` and
``/usr/lib/systemd/user-generators/podman-user-generator`` (sh wrappers running
``python3 -m atomicedge.workload.quadlet``), it reads ``.container``, ``.volume`` and ``.network``
files from Quadlet's directories (or ``QUADLET_UNIT_DIRS``), merges their drop-ins, and writes the
``.service`` units Quadlet would into the generator's output directory, with the ``[Install]``
section applied as symlinks (``WantedBy=``/``RequiredBy=``/``UpheldBy=``/``Alias=``). A file
it refuses (unknown key, bad syntax) is logged with its path and line and skipped; the others
are still generated and the exit code is 1, as Quadlet does. ``-dryrun`` prints the units.

stdlib only: this runs from the device image at every boot and ``daemon-reload``.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from atomicedge.errors import AtomicEdgeError
from atomicedge.workload import convert
from atomicedge.workload.unitfile import UnitFile, parse

UNIT_DIR_TEMP = "/run/containers/systemd"
UNIT_DIR_ADMIN = "/etc/containers/systemd"
UNIT_DIR_DISTRO = "/usr/share/containers/systemd"
MAX_SOURCE_BYTES = 1 << 20


@dataclass
class Result:
    """What one generator run produced: unit name -> text, symlinks, and the errors."""

    units: dict[str, str] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)  # relative link path -> target
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


# -- where the files are ----------------------------------------------------------------------

def _config_home(env: dict[str, str], uid: int) -> str:
    if env.get("XDG_CONFIG_HOME"):
        return env["XDG_CONFIG_HOME"]
    home = env.get("HOME")
    if not home:
        try:
            home = pwd.getpwuid(uid).pw_dir
        except KeyError:
            home = "/"
    return os.path.join(home, ".config")


def _walk(path: str, out: list[str], keep: Callable[[str], bool] = lambda p: True) -> None:
    """``path`` and its subdirectories (symlinks resolved, ``*.d`` drop-in dirs skipped)."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        if path not in out:
            out.append(path)  # listed for the log, as Quadlet does
        return
    if real in out or real.endswith(".d") or not keep(real):
        return
    out.append(real)
    try:
        names = sorted(os.listdir(real))
    except OSError:
        return
    for name in names:
        sub = os.path.join(real, name)
        if os.path.isdir(sub):
            _walk(sub, out, keep)


def unit_dirs(is_user: bool, env: dict[str, str] | None = None,
              uid: int | None = None) -> list[str]:
    """Quadlet's search path, highest precedence first (a name found earlier wins)."""
    env = dict(os.environ) if env is None else env
    uid = os.getuid() if uid is None else uid
    out: list[str] = []
    if env.get("QUADLET_UNIT_DIRS"):
        for d in env["QUADLET_UNIT_DIRS"].split(":"):
            if not os.path.isabs(d):
                raise AtomicEdgeError(f"QUADLET_UNIT_DIRS: {d!r} is not an absolute path",
                                      "list absolute directories separated by ':'")
            _walk(d, out)
        return out
    users_dirs = [os.path.realpath(os.path.join(b, "users"))
                  for b in (UNIT_DIR_ADMIN, UNIT_DIR_DISTRO)]

    def not_users(p: str) -> bool:  # rootful: the users/ trees belong to rootless users
        return not any(p == u or p.startswith(u + "/") for u in users_dirs)

    if not is_user:
        for base in (UNIT_DIR_TEMP, UNIT_DIR_ADMIN, UNIT_DIR_DISTRO):
            _walk(base, out, not_users)
        return out

    def other_users(p: str) -> bool:  # users/: skip numeric dirs (users/$UID is added below)
        for u in users_dirs:
            if p.startswith(u + "/"):
                return not re.fullmatch(r"[0-9]*", p[len(u) + 1:].split("/")[0])
        return True

    if env.get("XDG_RUNTIME_DIR"):
        _walk(os.path.join(env["XDG_RUNTIME_DIR"], "containers/systemd"), out)
    _walk(os.path.join(_config_home(env, uid), "containers/systemd"), out)
    for base in (UNIT_DIR_ADMIN, UNIT_DIR_DISTRO):
        _walk(os.path.join(base, "users"), out, other_users)
        _walk(os.path.join(base, "users", str(uid)), out)
    return out


# -- loading ----------------------------------------------------------------------------------

def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise AtomicEdgeError(f"{path}: larger than {MAX_SOURCE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AtomicEdgeError(f"{path}: not UTF-8 text") from None


def load_units(dirs: list[str], result: Result) -> list[UnitFile]:
    seen: set[str] = set()
    units: list[UnitFile] = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            if name in seen or os.path.splitext(name)[1] not in convert.EXTENSIONS:
                continue
            if not os.path.isfile(path):
                continue
            try:
                units.append(parse(_read(path), path))
            except (AtomicEdgeError, OSError) as exc:
                result.errors.append(f"error loading {path!r}: {exc}")
                continue
            seen.add(name)
            result.sources.append(path)
    return units


def dropin_paths(filename: str) -> list[str]:
    """Drop-in directory names for ``filename``, most specific first (Quadlet's order)."""
    base, ext = os.path.splitext(filename)
    unit_name, _, instance = base.partition("@")
    is_template = "@" in base
    dropin_ext = ext + ".d"
    paths = [dropin_ext[1:]]
    parts = unit_name.split("-")
    for i in range(len(parts) - 1):
        prefix = "-".join(parts[:i + 1]) + "-"
        paths.append(prefix + dropin_ext)
        if is_template:
            paths.append(prefix + "@" + dropin_ext)
    if instance:
        paths.append(unit_name + "@" + dropin_ext)
    paths.append(filename + ".d")
    return paths[::-1]


def load_dropins(unit: UnitFile, dirs: list[str], result: Result) -> None:
    chosen: dict[str, str] = {}
    for rel in dropin_paths(unit.filename):
        for d in dirs:
            dropdir = os.path.join(d, rel)
            try:
                names = os.listdir(dropdir)
            except OSError:
                continue
            for name in names:
                if name.endswith(".conf") and name not in chosen:
                    chosen[name] = os.path.join(dropdir, name)
    for name in sorted(chosen):
        try:
            unit.merge(parse(_read(chosen[name]), chosen[name]))
        except (AtomicEdgeError, OSError) as exc:
            result.errors.append(f"error loading {chosen[name]!r}: {exc}")


# -- generating -------------------------------------------------------------------------------

def _fully_qualified(image: str) -> bool:
    """Quadlet's test: an image id, or a name whose first component is a registry."""
    if image.startswith("sha256:") or re.fullmatch(r"[0-9a-fA-F]{64}", image):
        return True
    domain, slash, _ = image.partition("/")
    return bool(slash) and (any(c in domain for c in ".:") or domain == "localhost")


def unit_warnings(unit: UnitFile) -> list[str]:
    """What Quadlet warns about without refusing the file."""
    out = []
    for key in ("User", "Group", "DynamicUser"):
        if unit.has_key("Service", key):
            out.append(f"Warning: using key {key} in the Service group is not supported - use "
                       "at your own risk")
    image = unit.lookup("Container", "Image") or unit.lookup("Volume", "Image")
    if image and not _fully_qualified(image):
        out.append(f"Warning: {unit.filename} specifies the image \"{image}\" which not a "
                   "fully qualified image name. This is not ideal for performance and security "
                   "reasons. See the podman-pull manpage discussion of short-name-aliases.conf "
                   "for details.")
    return out


def install_symlinks(service: UnitFile) -> dict[str, str]:
    """``[Install]`` applied like ``systemctl enable``: relative link path -> target."""
    links: list[str] = [os.path.normpath(a) for a in service.lookup_all_strv("Install", "Alias")]
    name = service.filename
    base, ext = os.path.splitext(name)
    template, _, instance = base.partition("@")
    if "@" in base and not instance:
        default = service.lookup("Install", "DefaultInstance")
        name = f"{template}@{default}{ext}" if default else ""
    if name:
        for key, kind in (("WantedBy", "wants"), ("RequiredBy", "requires"),
                          ("UpheldBy", "upholds")):
            links += [f"{dep}.{kind}/{name}" for dep in service.lookup_all_strv("Install", key)
                      if "/" not in dep]
    return {link: os.path.relpath(service.filename, os.path.dirname(link) or ".")
            for link in links}


def generate(is_user: bool, *, dirs: list[str] | None = None, argv0: str = "quadlet",
             env: dict[str, str] | None = None) -> Result:
    """Everything a generator run would write (pure apart from reading the source files)."""
    result = Result()
    dirs = unit_dirs(is_user, env) if dirs is None else dirs
    units = load_units(dirs, result)
    for unit in units:
        load_dropins(unit, dirs, result)
    units.sort(key=lambda u: convert.EXTENSIONS[os.path.splitext(u.filename)[1]][2])
    infos = {u.filename: convert.unit_info(u) for u in units}
    for unit in units:
        ext = os.path.splitext(unit.filename)[1]
        result.warnings += unit_warnings(unit)
        try:
            service = convert.CONVERTERS[ext](unit, infos, is_user)
        except AtomicEdgeError as exc:
            result.errors.append(str(exc))
            continue
        service.prepend_comment(f"Automatically generated by {argv0}", "")
        result.units[service.filename] = service.to_string()
        result.symlinks.update(install_symlinks(service))
    return result


def write_output(result: Result, outdir: str) -> None:
    """Write units and symlinks into the generator's output directory."""
    os.makedirs(outdir, exist_ok=True)
    for name, text in result.units.items():
        path = os.path.join(outdir, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    for rel, target in result.symlinks.items():
        link = os.path.normpath(os.path.join(outdir, rel))
        if not link.startswith(os.path.normpath(outdir) + "/"):
            result.errors.append(f"Can't create symlink {rel}: outside the output directory")
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)


def dryrun_text(result: Result) -> str:
    return "".join(f"---{name}---\n{text}\n" for name, text in result.units.items())


# -- the generator's command line -------------------------------------------------------------

def _is_kmsg(path: str) -> bool:
    """The kernel log device itself (in an nspawn container /dev/kmsg leads nowhere)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 11)


class _Log:
    """Quadlet logs to /dev/kmsg, the only log a generator has (systemd gives generators no
    stderr). A container has no /dev/kmsg: there the console is used, so the errors show up
    on the device's console instead of vanishing."""

    def __init__(self, use_kmsg: bool) -> None:
        self.kmsg = None
        if use_kmsg:
            for dev in ("/dev/kmsg", "/dev/console"):
                if dev == "/dev/kmsg" and not _is_kmsg(dev):
                    continue
                try:
                    self.kmsg = open(dev, "w")  # noqa: SIM115 - kept for the whole run
                    break
                except OSError:
                    self.kmsg = None

    def __call__(self, msg: str) -> None:
        line = f"quadlet-generator[{os.getpid()}]: {msg}"
        if self.kmsg is not None:
            try:
                self.kmsg.write(line + "\n")
                self.kmsg.flush()
                return
            except OSError:
                self.kmsg = None
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """``[-user] [-dryrun] [-v] [-no-kmsg-log] [-argv0 NAME] normal-dir [early-dir late-dir]``"""
    args = list(sys.argv[1:] if argv is None else argv)
    flags, dirs, argv0 = set(), [], "podman-system-generator"
    while args:
        arg = args.pop(0)
        if arg.lstrip("-") == "argv0" and args:
            argv0 = args.pop(0)
        elif arg.startswith("-"):
            flags.add(arg.lstrip("-"))
        else:
            dirs.append(arg)
    unknown = flags - {"user", "dryrun", "v", "no-kmsg-log", "version"}
    is_user = "user" in flags or "user" in os.path.basename(argv0)
    dryrun = "dryrun" in flags
    log = _Log(use_kmsg=not (dryrun or "no-kmsg-log" in flags))
    if unknown:
        log(f"unknown flag(s): {', '.join(sorted(unknown))}")
        return 2
    if "version" in flags:
        print("4.4.0 (atomicedge)")
        return 0
    if not dryrun and not dirs:
        log("missing output directory argument")
        return 1
    try:
        result = generate(is_user, argv0=argv0)
    except AtomicEdgeError as exc:
        log(str(exc))
        return 1
    if dryrun:
        sys.stdout.write(dryrun_text(result))
    else:
        write_output(result, dirs[0])
    for msg in result.warnings + result.errors:
        log(msg)
    if result.errors:
        log("processing encountered some errors")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
