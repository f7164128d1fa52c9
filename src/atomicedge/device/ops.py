"""rpm-ostree's verbs on our sysroot: install, status, upgrade, deploy, rebase, rollback, cleanup.

These functions are what ``atomicedge device ...`` and the update agent call.  They return
plain results (the CLI maps "nothing to do" to exit code 77); all refusals are typed errors
raised *before* the boot configuration changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicedge.device import deploy as dp
from atomicedge.device.grubenv import GrubEnv
from atomicedge.device.origin import Origin
from atomicedge.device.sysroot import Deployment, Sysroot, init_fs, os_init
from atomicedge.errors import CorruptionError, NotFoundError, UsageError
from atomicedge.ostree.objects import CHECKSUM_RE, ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.remote import config as remotes

BOOTED_FLAG = Path("/run/ostree-booted")


def _pull(repo: Repo, remote: str, ref: str, commit: str | None = None) -> str:
    """:func:`atomicedge.device.fetch.pull`, imported when used: the HTTP stack (urllib3,
    ssl, http.client) is half the start-up of ``device status`` and of every health unit,
    which run on each boot and never pull."""
    from atomicedge.device import fetch
    return fetch.pull(repo, remote, ref, commit=commit)


def default_sysroot() -> Path:
    """``/sysroot`` on a booted device (how our boots mount it), else refuse."""
    if BOOTED_FLAG.exists():
        return Path("/sysroot") if Path("/sysroot/ostree").is_dir() else Path("/")
    raise UsageError("not running on an atomicedge device (no /run/ostree-booted)",
                     "pass --sysroot DIR to work on a sysroot directory")


def open_sysroot(path: str | None) -> Sysroot:
    return Sysroot.open(Path(path) if path else default_sysroot())


def pick_osname(sysroot: Sysroot, osname: str | None = None) -> str:
    if osname:
        return osname
    deps = sysroot.deployments()
    booted = sysroot.booted(deps)
    if booted:
        return booted.osname
    if deps:
        return deps[0].osname
    roots = sorted(p.name for p in (sysroot.ostree / "deploy").iterdir() if p.is_dir())
    if len(roots) == 1:
        return roots[0]
    raise UsageError("cannot tell which stateroot to use", "pass --osname")


def var_lib(sysroot: Sysroot, osname: str) -> Path:
    """The device's ``/var/lib/atomicedge`` (live ``/var`` when booted, else the stateroot's)."""
    if sysroot.booted() is not None:
        return Path("/var/lib/atomicedge")
    return sysroot.stateroot(osname) / "var" / "lib" / "atomicedge"


# -- install -------------------------------------------------------------------------------

def install(path: Path, osname: str, url: str, ref: str, remote: str = "origin",
            kargs: list[str] | None = None) -> Deployment:
    """kickstart ``ostreesetup``: init-fs, os-init, remote add, pull, deploy, grubenv."""
    remotes.validate_url(url) if "://" in url else None
    sysroot = init_fs(path)
    os_init(sysroot, osname)
    repo = sysroot.repo
    existing = repo.config.get(f'remote "{remote}"', "url")
    if existing is None:
        remotes.add(repo, remote, url if "://" in url else f"file://{Path(url).resolve()}",
                    gpg_verify=False)
    csum = _pull(repo, remote, ref)
    d = dp.deploy(sysroot, osname, csum, Origin.new(f"{remote}:{ref}"),
                  kargs if kargs is not None else ["rw"])
    env = GrubEnv(sysroot.grubenv_path)
    if not env.exists():
        env.write({})
    return d


# -- status --------------------------------------------------------------------------------

def deployment_json(sysroot: Sysroot, d: Deployment, booted: Deployment | None) -> dict[str, Any]:
    version, timestamp = None, None
    if sysroot.repo.has_object(d.csum, ObjectType.COMMIT):
        c = sysroot.repo.load_commit(d.csum)
        version, timestamp = c.version, c.timestamp
    try:
        origin: str | None = sysroot.load_origin(d).refspec
    except Exception:
        origin = None
    try:
        pinned: bool | None = sysroot.is_pinned(d)
    except CorruptionError:
        pinned = None  # status still lists it; every operation that needs it refuses
    return {"id": d.id, "osname": d.osname, "serial": d.serial, "checksum": d.csum,
            "version": version, "timestamp": timestamp, "origin": origin,
            "booted": d.same(booted), "staged": d.staged, "pinned": pinned}


def status(sysroot: Sysroot) -> dict[str, Any]:
    deps = sysroot.deployments()
    booted = sysroot.booted(deps)
    staged = dp.pending_staged(sysroot, deps)
    listed = ([staged.deployment()] if staged else []) + deps
    try:
        env: dict[str, str] | str = GrubEnv(sysroot.grubenv_path).read()
    except Exception as exc:  # status must still show the deployments
        env = f"unreadable: {exc}"
    osname = booted.osname if booted else (deps[0].osname if deps else None)
    agent = _agent_state(sysroot, osname) if osname else {}
    return {"deployments": [deployment_json(sysroot, d, booted) for d in listed],
            "transaction": None, "cached-update": agent.get("cached-update"),
            "update-policy": agent.get("policy"), "grubenv": env,
            "denylist": agent.get("denylist", [])}


def _agent_state(sysroot: Sysroot, osname: str) -> dict[str, Any]:
    base = var_lib(sysroot, osname)
    out: dict[str, Any] = {}
    try:
        out.update(json.loads((base / "agent-state.json").read_text()))
    except (OSError, ValueError):
        pass
    out["denylist"] = sorted(read_denylist(sysroot, osname))
    return out


def read_denylist(sysroot: Sysroot, osname: str) -> set[str]:
    try:
        text = (var_lib(sysroot, osname) / "denylist").read_text()
    except OSError:
        return set()
    return {ln.split()[0] for ln in text.splitlines() if CHECKSUM_RE.match(ln.split()[0]
                                                                            if ln.split() else "")}


def format_status(st: dict[str, Any], verbose: bool = False) -> str:
    lines: list[str] = []
    deps = st["deployments"]
    booted_idx = next((i for i, d in enumerate(deps) if d["booted"]), None)
    for i, d in enumerate(deps):
        mark = "●" if d["booted"] else " "
        tags = []
        if d["staged"]:
            tags.append("staged")
        elif booted_idx is not None and i < booted_idx:
            tags.append("pending")
        elif booted_idx is not None and i == booted_idx + 1:
            tags.append("rollback")
        if d["pinned"]:
            tags.append("pinned")
        elif d["pinned"] is None:
            tags.append("pin state unknown: origin file damaged")
        suffix = f" ({', '.join(tags)})" if tags else ""
        lines.append(f"{mark} {d['origin'] or '(no origin)'}{suffix}")
        lines.append(f"    Version: {d['version'] or '-'}")
        lines.append(f"     Commit: {d['checksum']}")
        if verbose:
            lines.append(f"         Id: {d['id']}")
            lines.append(f"  Timestamp: {d['timestamp']}")
    if verbose:
        lines.append(f"grubenv: {st['grubenv']}")
        lines.append(f"update policy: {st.get('update-policy')}")
        if st.get("denylist"):
            lines.append("rolled back (not retried): " + ", ".join(st["denylist"]))
    return "\n".join(lines) + "\n"


# -- upgrade / deploy / rebase -------------------------------------------------------------

@dataclass
class UpgradeResult:
    changed: bool
    message: str
    checksum: str | None = None
    staged: bool = False


def _base(sysroot: Sysroot, osname: str) -> tuple[Deployment, Origin]:
    deps = sysroot.deployments()
    base = sysroot.booted(deps) or next((d for d in deps if d.osname == osname), None)
    if base is None:
        raise NotFoundError(f"no deployment of {osname!r} to upgrade",
                            "install first: atomicedge device install ...")
    return base, sysroot.load_origin(base)


def check_update(sysroot: Sysroot, osname: str) -> tuple[Deployment, Origin, str]:
    """Pull the origin's ref; returns (base deployment, origin, newest commit)."""
    base, origin = _base(sysroot, osname)
    if origin.unconfigured_state:
        raise UsageError(f"origin says: {origin.unconfigured_state}")
    if origin.override_commit:
        return base, origin, origin.override_commit
    remote = origin.remote
    if remote is None:
        return base, origin, sysroot.repo.resolve_rev(origin.ref)
    return base, origin, _pull(sysroot.repo, remote, origin.ref)


def apply_commit(sysroot: Sysroot, osname: str, csum: str, origin: Origin) -> UpgradeResult:
    """Stage on a running device (finalized at shutdown), deploy directly offline."""
    if sysroot.booted() is not None:
        dp.stage(sysroot, osname, csum, origin)
        return UpgradeResult(True, f"Staged update {csum[:12]}; it is applied at the next "
                             "reboot", csum, staged=True)
    d = dp.deploy(sysroot, osname, csum, origin, arm_counter=True)
    dp.cleanup(sysroot, prune=False)
    return UpgradeResult(True, f"Deployed {d.id}; it boots next", csum)


def upgrade(sysroot: Sysroot, osname: str, *, check: bool = False,
            download_only: bool = False) -> UpgradeResult:
    base, origin, csum = check_update(sysroot, osname)
    deps = sysroot.deployments()
    staged = dp.pending_staged(sysroot, deps)
    current = {base.csum}
    if staged:
        current.add(staged.csum)
    elif deps and sysroot.booted(deps) is None:
        current.add(deps[0].csum)
    if csum in current or (deps and deps[0].csum == csum):
        return UpgradeResult(False, "No upgrade available.", csum)
    if check:
        return UpgradeResult(True, f"Update available: {csum}", csum)
    if download_only:
        return UpgradeResult(True, f"Downloaded {csum}; not deployed (--download-only)", csum)
    return apply_commit(sysroot, osname, csum, origin)


def deploy_rev(sysroot: Sysroot, osname: str, rev: str) -> UpgradeResult:
    base, origin = _base(sysroot, osname)
    repo = sysroot.repo
    csum = repo.resolve_rev(rev, allow_missing=True) if not CHECKSUM_RE.match(rev) else rev
    if not csum or not repo.has_object(csum, ObjectType.COMMIT):
        if origin.remote and CHECKSUM_RE.match(rev):
            csum = _pull(repo, origin.remote, origin.ref, commit=rev)
        else:
            raise NotFoundError(f"no such commit or ref: {rev!r}",
                                "give a full commit checksum or a ref known to the sysroot")
    if csum == base.csum:
        return UpgradeResult(False, f"{csum[:12]} is already deployed", csum)
    return apply_commit(sysroot, osname, csum, origin.with_override(csum))


def rebase(sysroot: Sysroot, osname: str, refspec: str) -> UpgradeResult:
    base, origin = _base(sysroot, osname)
    remote, sep, ref = refspec.rpartition(":")
    if not sep:
        remote = origin.remote or ""
    if remote:
        remotes.get(sysroot.repo, remote)  # a missing remote is a clear error
        csum = _pull(sysroot.repo, remote, ref)
        new_spec = f"{remote}:{ref}"
    else:
        csum = sysroot.repo.resolve_rev(ref)
        new_spec = ref
    if csum == base.csum and new_spec == origin.refspec:
        return UpgradeResult(False, "already on that ref", csum)
    return apply_commit(sysroot, osname, csum, origin.with_refspec(new_spec))


def cleanup(sysroot: Sysroot, pending: bool = False, rollback: bool = False) -> dict[str, int]:
    deps = sysroot.deployments()
    booted = sysroot.booted(deps)
    bidx = next((i for i, d in enumerate(deps) if d.same(booted)), 0)
    drop: set[int] = set()
    if pending:
        dp.discard_staged(sysroot)
        drop |= set(range(bidx))
    if rollback:
        drop |= set(range(bidx + 1, len(deps)))
    drop = {i for i in drop if not sysroot.is_pinned(deps[i])}
    if drop:
        with sysroot.lock():
            sysroot.write_deployments([d for i, d in enumerate(deps) if i not in drop])
    return dp.cleanup(sysroot)


def install_ok(sysroot_path: Path) -> bool:
    return (sysroot_path / "ostree" / "repo" / "config").is_file() and os.path.lexists(
        sysroot_path / "boot" / "loader")
