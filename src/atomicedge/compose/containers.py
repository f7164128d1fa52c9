"""Blueprint ``[[containers]]``: container images pulled at compose time and embedded in the commit.

osbuild's keys: ``source`` (a fully qualified reference: ``registry[:port]/path[:tag]`` or
``...@sha256:<hex>``), ``name`` (optional: store the image under this name instead, e.g. the
name the device's Quadlet ``Image=`` uses), ``tls-verify`` (default true; false for a plain
HTTP registry)::

    [[containers]]
    source = "127.0.0.1:5000/app:v1"
    name = "registry.edge.internal/app:prod"
    tls-verify = false

As osbuild does, each ``source`` is resolved to its manifest digest when the compose starts
(``skopeo inspect --raw``, the digest is the sha256 of those bytes): the digest is part of the
compose input hash (a new image behind the same tag is a new input; an unchanged one lets a
recompose reuse the parent's tree), and the image is then pulled by that digest, so what is
embedded is exactly what was hashed even if the tag moves during the compose.

The images go into a containers-storage at ``/usr/share/containers/storage`` (osbuild's
location), read-only on the device, configured as an additional image store
(``/etc/containers/storage.conf``, see :mod:`atomicedge.workload.podman_defaults`) for root and
for the blueprint's users (each gets ``~/.config/containers/storage.conf`` linked to it at first
boot): podman on the device finds the image with no registry reachable. The store's metadata is
made readable for everyone (c/storage writes it 0600/0700); the layers keep the image's own
modes.

:func:`check_reference` is pure; :func:`resolve` and :func:`embed` call skopeo through
:mod:`atomicedge.runner`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.blueprint import ContainerSpec
from atomicedge.compose.ostreeprep import LINKS
from atomicedge.errors import CorruptionError
from atomicedge.workload import podman_defaults

STORE = podman_defaults.IMAGE_STORE.lstrip("/")
TMPFILES = "usr/lib/tmpfiles.d/atomicedge-containers.conf"
# podman 4.3.1's auto-update only considers images of the read-write store (it lists them with
# readonly=false) and gives up on a container whose image is only in the read-only one;
# `podman tag NAME NAME` "pulls up" such an image (a record in the user's own storage, the layers
# stay where they are), so the update of a container started from an embedded image works
AUTO_UPDATE_DROPIN = "podman-auto-update.service.d/10-atomicedge-embedded-images.conf"
PULL_UP = ("[Service]\n"
           "# atomicedge: embedded images (read-only store) get a record in this user's own\n"
           "# storage first: podman auto-update ignores read-only images (docs/workloads.md)\n"
           "ExecStartPre=/bin/sh -c 'podman images --filter readonly=true --format "
           "\"{{.Repository}}:{{.Tag}}\" | grep -v \"<none>\" | while read -r name; do "
           "podman tag \"$$name\" \"$$name\"; done'\n")
MAX_MANIFEST = 4 << 20
_DOMAIN = r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*" \
          r"[A-Za-z0-9])?)*)(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF = re.compile(rf"^(?P<domain>{_DOMAIN})/(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
                  r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
                  r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$")


def check_reference(ref: str, *, allow_digest: bool = True) -> str | None:
    """None when ``ref`` is a fully qualified image reference, else what is wrong with it."""
    m = _REF.match(ref)
    if not m or len(ref) > 255:
        if "/" not in ref or not re.match(rf"^{_DOMAIN}/", ref):
            return f"{ref!r} is not fully qualified (the registry host comes first)"
        return f"{ref!r} is not a valid image reference"
    domain = m.group("domain")
    if "." not in domain and ":" not in domain and domain != "localhost":
        return f"{ref!r} is not fully qualified ({domain!r} is not a registry host)"
    if m.group("digest") and not allow_digest:
        return f"{ref!r} has a digest; a stored name takes a tag"
    if m.group("digest") and m.group("tag"):
        return f"{ref!r} has both a tag and a digest"
    return None


def repository(ref: str) -> str:
    """``host:port/path`` of a valid reference (tag and digest dropped)."""
    m = _REF.match(ref)
    assert m is not None, ref
    return f"{m.group('domain')}/{m.group('path')}"


@dataclass(frozen=True)
class Resolved:
    """A ``[[containers]]`` entry with the manifest digest its source had at compose time."""

    spec: ContainerSpec
    digest: str                      # sha256:<hex>

    @property
    def pull_ref(self) -> str:
        return f"{repository(self.spec.source)}@{self.digest}"

    @property
    def stored_name(self) -> str:
        return self.spec.name or self.spec.source

    def hash_input(self) -> dict[str, object]:
        return {"source": self.spec.source, "name": self.stored_name,
                "tls-verify": self.spec.tls_verify, "digest": self.digest}


def _tls(flag: str, spec: ContainerSpec) -> list[str]:
    """``--tls-verify=false`` (inspect) / ``--src-tls-verify=false`` (copy) when asked."""
    return [] if spec.tls_verify else [f"--{flag}=false"]


def resolve(specs: Sequence[ContainerSpec]) -> tuple[Resolved, ...]:
    """Each source's manifest digest, from its registry (the compose's depsolve step)."""
    out = []
    for spec in specs:
        m = _REF.match(spec.source)
        assert m is not None, spec.source
        if m.group("digest"):                 # pinned: nothing to ask, skopeo copy checks it
            out.append(Resolved(spec, m.group("digest")))
            continue
        hint = ("is the registry up and reachable from this host? a plain HTTP registry needs "
                "tls-verify = false in the blueprint's [[containers]]")
        raw = tool.run_bytes(["skopeo", "inspect", "--raw", *_tls("tls-verify", spec),
                              f"docker://{spec.source}"],
                             what=f"[[containers]] {spec.source}: resolve its digest",
                             hint=hint, timeout=120).stdout
        if not raw or len(raw) > MAX_MANIFEST:
            raise CorruptionError(f"[[containers]] {spec.source}: the registry sent a manifest "
                                  f"of {len(raw)} bytes", "check the registry")
        out.append(Resolved(spec, "sha256:" + hashlib.sha256(raw).hexdigest()))
    return tuple(out)


def embed(tree: Path, images: Sequence[Resolved], work: Path) -> None:
    """Pull each image by digest (once, into a ``dir:`` copy that keeps the manifest as the
    registry sent it) and store it in ``tree``'s image store for every driver the device's
    podman uses (:data:`podman_defaults.STORE_DRIVERS`), then open up the store's metadata."""
    if not images:
        return
    store = tree / STORE
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="containers-", dir=work))
    try:
        for n, img in enumerate(images):
            copy = tmp / f"image-{n}"
            tool.run(["skopeo", "copy", "--quiet", *_tls("src-tls-verify", img.spec),
                      f"docker://{img.pull_ref}", f"dir:{copy}"],
                     what=f"[[containers]] {img.spec.source}: pull {img.digest[:19]}",
                     hint="is the registry up? the digest was resolved when the compose "
                          "started; a registry that lost it fails here", timeout=900)
            for driver in podman_defaults.STORE_DRIVERS:
                dest = f"containers-storage:[{driver}@{store}+{tmp / 'run'}]{img.stored_name}"
                tool.run(["skopeo", "copy", "--quiet", f"dir:{copy}", dest],
                         what=f"[[containers]] {img.spec.source}: store it ({driver})",
                         timeout=900)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    open_up(store)
    for units in ("usr/lib/systemd/system", "usr/lib/systemd/user"):
        dropin = tree / units / AUTO_UPDATE_DROPIN
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(PULL_UP)


def open_up(store: Path) -> None:
    """Make the store's metadata readable by every user (rootless podman reads it too); inside
    the layers (``overlay/<id>/diff``, ``vfs/dir/<id>``) only the layer's top directory is
    opened (c/storage makes it 0700; an image's / is 0755), the rest keeps the image's own
    owners and modes."""
    for root, dirs, files in os.walk(store):
        here = Path(root)
        _chmod(here, 0o755)
        layers = ["diff"] if here.parent == store / "overlay" else \
            list(dirs) if here == store / "vfs" / "dir" else []
        for layer in layers:
            if layer in dirs:
                _chmod(here / layer, 0o755)
                dirs.remove(layer)
        for name in files:
            _chmod(here / name, 0o644)


def _chmod(path: Path, mode: int) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    os.chmod(path, stat.S_IMODE(st.st_mode) | (mode & 0o555 if stat.S_ISDIR(st.st_mode)
                                               else mode & 0o444))


def install_user_links(tree: Path, users: Sequence[str]) -> None:
    """:func:`user_links` for the blueprint's users (homes from the tree's passwd, at their
    /var paths as the accounts' own tmpfiles lines)."""
    from atomicedge.compose.custom.accounts import read_db
    passwd = read_db(tree, "passwd")
    homes = []
    for user in users:
        if user == "root" or user not in passwd:
            continue
        first, _, rest = passwd[user][5].strip("/").partition("/")
        target = LINKS.get(first)
        homes.append((user, "/" + "/".join(p for p in (target, rest) if p) if target
                      else passwd[user][5]))
    if homes:
        path = tree / TMPFILES
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(user_links(homes))


def user_links(homes: Sequence[tuple[str, str]]) -> str:
    """tmpfiles.d lines giving each (user, home) ``~/.config/containers/storage.conf`` ->
    /etc/containers/storage-rootless.conf (rootless podman ignores the system file's image
    stores; it reads the user's file when one exists)."""
    lines = ["# created by atomicedge: rootless podman sees the embedded images "
             "(/usr/share/containers/storage)"]
    for user, home in homes:
        lines += [f"d {home}/.config 0700 {user} {user} -",
                  f"d {home}/.config/containers 0700 {user} {user} -",
                  f"L {home}/.config/containers/storage.conf - - - - "
                  f"/etc/{podman_defaults.ROOTLESS_STORAGE_CONF}"]
    return "\n".join(lines) + "\n"
