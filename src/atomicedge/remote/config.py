"""Remotes in the repository ``config``, written exactly as ``ostree remote add`` does.

A remote is a ``[remote "NAME"]`` group with ``url``, ``gpg-verify``, ``sign-verify``,
``branches`` and the ed25519 key options, so the real ``ostree`` can pull from a remote that
atomicedge configured and the other way round.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree.repo import REF_COMPONENT, Repo


def _group(name: str) -> str:
    return f'remote "{name}"'


def validate_remote_name(name: str) -> str:
    if not REF_COMPONENT.match(name):
        raise UsageError(f"invalid remote name {name!r}",
                         "use letters, digits, '-', '.', '_' (no '/')")
    return name


MIRRORLIST = "mirrorlist="


def validate_url(url: str, what: str = "remote URL") -> str:
    """A repository URL, or ``mirrorlist=URL`` of a file listing them (ostree's syntax)."""
    bare = url.removeprefix(MIRRORLIST)
    if urlsplit(bare).scheme not in ("http", "https", "file"):
        raise UsageError(f"invalid {what} {url!r}",
                         "use http://, https:// or file:// URLs, optionally after mirrorlist=")
    return url


@dataclass
class Remote:
    """A remote's settings as the pull client uses them."""

    name: str | None
    url: str
    gpg_verify: bool = False
    gpg_verify_summary: bool = False
    sign_verify: bool = False
    sign_verify_summary: bool = False
    ed25519_keys: list[str] = field(default_factory=list)
    gpg_keyring: Path | None = None
    branches: list[str] = field(default_factory=list)
    contenturl: str | None = None  # content objects and delta parts come from here


def add(repo: Repo, name: str, url: str, *, gpg_verify: bool = True,
        sign_verify: bool = False, branches: list[str] | None = None,
        options: dict[str, str] | None = None, if_not_exists: bool = False) -> None:
    validate_remote_name(name)
    validate_url(url)
    if options and options.get("contenturl"):
        validate_url(options["contenturl"], "contenturl")
    group = _group(name)
    if group in repo.config.groups:
        if if_not_exists:
            return
        raise UsageError(f"remote {name!r} already exists",
                         "delete it first or use --if-not-exists")
    repo.config.set(group, "url", url)
    repo.config.set(group, "gpg-verify", "true" if gpg_verify else "false")
    if sign_verify:
        repo.config.set(group, "sign-verify", "true")
    if branches:
        repo.config.set(group, "branches", ";".join(branches) + ";")
    for key, value in (options or {}).items():
        repo.config.set(group, key, value)
    repo.write_config()


def delete(repo: Repo, name: str, *, if_exists: bool = False) -> None:
    if not repo.config.remove_group(_group(name)):
        if if_exists:
            return
        raise NotFoundError(f"remote {name!r} does not exist",
                            "list remotes with: atomicedge repo remote list")
    repo.write_config()
    (repo.path / f"{name}.trustedkeys.gpg").unlink(missing_ok=True)
    shutil.rmtree(repo.path / "refs" / "remotes" / name, ignore_errors=True)


def names(repo: Repo) -> list[str]:
    out = []
    for g in repo.config.groups:
        if g.startswith('remote "') and g.endswith('"'):
            out.append(g[len('remote "'):-1])
    return sorted(out)


def get(repo: Repo, name: str) -> Remote:
    group = _group(name)
    if group not in repo.config.groups:
        raise NotFoundError(f"remote {name!r} does not exist",
                            f"add it with: atomicedge repo remote add --repo {repo.path} "
                            f"{name} URL")
    cfg = repo.config
    url = cfg.get(group, "url") or ""
    validate_url(url)
    contenturl = cfg.get(group, "contenturl")
    if contenturl:
        validate_url(contenturl, f"contenturl of remote {name!r}")
    sign = (cfg.get(group, "sign-verify") or "false").lower()
    keys = [k for k in (cfg.get(group, "verification-ed25519-key") or "").split(";") if k]
    keyfile = cfg.get(group, "verification-ed25519-file")
    if keyfile:
        try:
            keys += [ln.strip() for ln in Path(keyfile).read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise NotFoundError(f"remote {name}: verification-ed25519-file {keyfile}: "
                                f"{exc.strerror}") from None
    keyring = repo.path / f"{name}.trustedkeys.gpg"
    return Remote(
        name=name, url=url,
        gpg_verify=cfg.get_bool(group, "gpg-verify", True),
        gpg_verify_summary=cfg.get_bool(group, "gpg-verify-summary", False),
        sign_verify=sign not in ("false", "0", "no"),
        sign_verify_summary=cfg.get_bool(group, "sign-verify-summary", False),
        ed25519_keys=keys, gpg_keyring=keyring if keyring.exists() else None,
        branches=[b for b in (cfg.get(group, "branches") or "").split(";") if b],
        contenturl=contenturl or None)


def resolve(repo: Repo, remote_or_url: str) -> Remote:
    """A configured remote by name, or an ad-hoc unverified remote for a bare URL."""
    if "://" in remote_or_url:
        return Remote(name=None, url=validate_url(remote_or_url))
    return get(repo, validate_remote_name(remote_or_url))
