"""Depsolve: blueprint packages + the image profile -> the exact package set, before any build.

Unknown packages and unmatched version globs are reported as blueprint problems with their
line, so a typo fails in a second instead of after a minute of mmdebstrap. The resolved set
(name, version, arch) is also the core of the tree cache key.

Profiles (the packages every image gets on top of Debian's ``minbase``):
* ``edge`` — bootable: systemd, udev, dbus, kernel, dracut with Debian's ``ostree-boot`` module,
  ostree, openssh-server, sudo, iproute2, python3 + the Debian modules of the device closure;
  firewalld when the blueprint configures the firewall; crun, uidmap, slirp4netns,
  dbus-user-session and libpam-systemd when it asks for podman (workloads).
* ``test`` — minbase + the blueprint's packages only. It omits systemd, the kernel, the
  initramfs, ssh and firewalld, so it is not bootable; a test supplies a stub kernel package
  (``kernel.name``) to keep it deployable by ``ostree admin deploy``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass

from atomicedge.compose.apt import AptState
from atomicedge.compose.blueprint import Blueprint, BlueprintError, PackageSpec, Problem
from atomicedge.fsutil import atomic_write
from atomicedge.workload import podman_defaults

MINBASE = ["?essential", "?priority(required)", "apt"]
EDGE_BASE = ["systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "openssh-server",
             "sudo", "dracut", "ostree", "ostree-boot", "ca-certificates",
             # /etc/protocols and /etc/services: firewalld (and much else) refuses to start
             # without them, and minbase does not carry them
             "netbase",
             # the device agent (atomicedge itself, copied in by the build) runs on these
             "python3", "python3-rich", "python3-urllib3", "python3-nacl"]
PROFILES = ("edge", "test")
DEFAULT_KERNEL = {"amd64": "linux-image-amd64", "arm64": "linux-image-arm64"}


@dataclass(frozen=True)
class Resolution:
    """What depsolve decided: mmdebstrap --include specs and the full resolved set."""

    includes: tuple[str, ...]                       # name or name=version for mmdebstrap
    packages: tuple[tuple[str, str, str], ...]      # (name, version, arch) of the whole tree
    release_hashes: tuple[tuple[str, str], ...]
    profile: str


def profile_packages(bp: Blueprint, profile: str, arch: str) -> list[str]:
    """Packages the profile adds for this blueprint (pure)."""
    cust = bp.customizations
    extra: list[str] = []
    if profile == "edge":
        extra += [*EDGE_BASE, cust.kernel_name or DEFAULT_KERNEL.get(arch, "linux-image-amd64")]
        if not cust.firewall.empty():
            extra.append("firewalld")
        if cust.languages:
            extra.append("locales")
        if cust.ntpservers:
            extra.append("systemd-timesyncd")
        if podman_defaults.wants_podman([p.name for p in bp.packages]):
            extra += [p for p in podman_defaults.PACKAGES if p not in extra]
    elif cust.kernel_name:
        extra.append(cust.kernel_name)
    return extra


def _glob_re(glob: str) -> str:
    """Version glob -> an apt ``?version()`` regex without parentheses (apt patterns nest them)."""
    out = "".join(".*" if ch == "*" else "." if ch == "?" else
                  ("\\" + ch if ch in ".+^$[]{}|\\" else ch) for ch in glob)
    return f"^{out}$"


def expand_specs(state: AptState, specs: list[PackageSpec],
                 what: str = "packages") -> tuple[list[str], list[Problem]]:
    """Check each blueprint entry against the sources; return include specs and problems."""
    includes: list[str] = []
    problems: list[Problem] = []
    exact = [s.name for s in specs if not any(ch in s.name for ch in "*?")]
    avail = state.madison(exact)
    for idx, spec in enumerate(specs):
        path = f"{what}[{idx}].name"
        if any(ch in spec.name for ch in "*?"):
            prefix = spec.name.split("*")[0].split("?")[0]
            names = [n for n in state.pkgnames(prefix) if fnmatch.fnmatchcase(n, spec.name)]
            if not names:
                problems.append(Problem(path, f"no package matches {spec.name!r}",
                                        "try `atomicedge packages search`", spec.line))
            includes += names
            continue
        versions = avail.get(spec.name)
        if not versions:
            hint = "run `atomicedge packages search NAME`"
            problems.append(Problem(path, f"unknown package {spec.name!r} in the sources", hint,
                                    spec.line))
            continue
        if spec.version in ("", "*"):
            includes.append(spec.name)
            continue
        match = [v for v in versions if fnmatch.fnmatchcase(v, spec.version)]
        if not match:
            problems.append(Problem(f"{what}[{idx}].version",
                                    f"no {spec.name} version matches {spec.version!r}",
                                    f"available: {', '.join(versions[:5])}", spec.line))
            continue
        includes.append(f"{spec.name}={match[0]}")
    return includes, problems


def depsolve(bp: Blueprint, state: AptState, profile: str = "edge", *,
             update: bool = True) -> Resolution:
    """Resolve the blueprint against ``state``'s sources; BlueprintError for unknown packages."""
    if update:
        state.update()
    tasks = [PackageSpec(f"task-{g.name}", "*", g.line) for g in bp.groups]
    base_specs = [PackageSpec(n) for n in profile_packages(bp, profile, state.arch)]
    inc_bp, problems = expand_specs(state, list(bp.packages), "packages")
    inc_tasks, p_tasks = expand_specs(state, tasks, "groups")
    for p in p_tasks:
        problems.append(Problem(p.path, p.message.replace("package", "group (Debian task)"),
                                "groups map to Debian task-* metapackages, e.g. ssh-server",
                                p.line))
    inc_base, p_base = expand_specs(state, base_specs, "profile")
    for p in p_base:
        problems.append(Problem(f"profile {profile}", p.message,
                                "the sources lack a package the profile needs; "
                                "use --profile test or a full mirror"))
    if problems:
        raise BlueprintError(bp.source or bp.name, problems)
    includes = tuple(dict.fromkeys(inc_base + inc_bp + inc_tasks))
    hashes = tuple(sorted(state.release_hashes().items()))
    return Resolution(includes, tuple(_simulate_cached(state, hashes, includes)), hashes, profile)


def _simulate_cached(state: AptState, hashes: tuple[tuple[str, str], ...],
                     includes: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """apt's answer is a pure function of (indexes, request): memoize it (apt takes ~4 s)."""
    key = hashlib.sha256(json.dumps([hashes, includes, state.arch]).encode()).hexdigest()
    memo = state.dir / "depsolve" / f"{key}.json"
    if memo.exists():
        return [tuple(p) for p in json.loads(memo.read_text())]
    packages = state.simulate([*MINBASE, *includes])
    memo.parent.mkdir(exist_ok=True)
    atomic_write(memo, json.dumps(packages), fsync=False)
    return packages


def search(state: AptState, pattern: str, *, update: bool = True) -> list[tuple[str, str, str]]:
    """Packages whose name matches a glob (or contains the text): [(name, version, summary)]."""
    if update:
        state.update()
    glob = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
    found = {name: summary for name, summary in state.search_names(_glob_re(glob))
             if fnmatch.fnmatchcase(name, glob)}
    names = sorted(found)[:200]
    versions = state.madison(names)
    return [(n, (versions.get(n) or ["?"])[0], found[n]) for n in names]
