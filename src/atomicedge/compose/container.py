"""The edge-container artifact: an OCI archive of a container serving the commit's repo on :8080.

As RHEL 8.4's ``edge-container``: ``podman run -p 8080:8080 IMAGE`` gives an OSTree HTTP repo
at ``http://HOST:8080/repo/`` holding the commit (and ``/compose.json``), for installers and
devices to pull from.

The server is BusyBox's ``httpd`` from Debian's ``busybox-static``, taken from the compose's
own apt sources (so an offline repository works and the version is the mirror's). Why: it is
one statically linked binary (~2 MB, no libc, no package database, no shell needed) that
serves static files with correct GET/HEAD/404 — all an ``ostree pull`` asks of a server — and
runs as an unprivileged user; nginx (what RHEL ships) would add a whole minbase tree of ~80 MB
and a writable state directory, python3's http.server ~50 MB and a single-threaded loop.

The archive is written here, without buildah: OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/``) in a tar, two uncompressed layers (the ostree objects are
already deflated; gzip would only burn CPU): the server (identical for every commit, so a
registry stores it once) and the repo (the commit's objects read straight from the archive
repository, no copy). Entries are sorted with fixed owners and mtimes, so the same commit gives
the same image digest. Written to a temporary name and renamed: no half archive on failure.
``push`` hands the archive to ``skopeo copy`` (any registry ``docker://HOST[:PORT]/NAME:TAG``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.apt import AptState
from atomicedge.compose.metadata import compose_json
from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo

SERVER_PACKAGE = "busybox-static"
PORT = 8080
WWW = "srv/www"
USER = "65534:65534"
MEDIA = {"manifest": "application/vnd.oci.image.manifest.v1+json",
         "config": "application/vnd.oci.image.config.v1+json",
         "layer": "application/vnd.oci.image.layer.v1.tar"}
_DEST = re.compile(r"^docker://[A-Za-z0-9.-]+(:\d+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[\w][\w.-]{0,127})?$")


@dataclass(frozen=True)
class Image:
    path: Path
    digest: str         # manifest digest (sha256:...)
    ref_name: str


def check_destination(dest: str) -> str:
    """``docker://HOST[:PORT]/NAME[:TAG]`` or UsageError (checked before any build)."""
    if not _DEST.match(dest):
        raise UsageError(f"--push {dest!r} is not a registry destination",
                         "use docker://HOST[:PORT]/NAME:TAG, e.g. docker://127.0.0.1:5000/edge/gw:1")
    return dest


def fetch_server(state: AptState, cache: Path) -> tuple[bytes, str]:
    """The busybox binary from ``busybox-static`` of the compose's sources: (bytes, version)."""
    versions = state.madison([SERVER_PACKAGE]).get(SERVER_PACKAGE)
    if not versions:
        raise NotFoundError(f"edge-container: {SERVER_PACKAGE} is not in the apt sources",
                            "the container's HTTP server comes from it; add it to the "
                            "offline repository or use a Debian mirror")
    version = versions[0]
    cache.mkdir(parents=True, exist_ok=True)
    name = f"{SERVER_PACKAGE}_{version.replace(':', '%3a')}_{state.arch}.deb"
    if not (cache / name).exists():
        # apt-get download checks the .deb against the hash of the (signed) index
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
        try:
            tool.run(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(tmp), "apt-get",
                      "-q", "download", *state.options(), f"{SERVER_PACKAGE}={version}"],
                     what=f"apt-get download {SERVER_PACKAGE}")
            os.replace(next(tmp.glob("*.deb")), cache / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=cache) as unpack:
        tool.run(["dpkg-deb", "-x", str(cache / name), unpack], what="dpkg-deb -x")
        binary = Path(unpack) / "bin/busybox"
        if not binary.is_file():
            raise NotFoundError(f"{name} has no /bin/busybox")
        return binary.read_bytes(), version


def _info(name: str, kind: bytes, mode: int, mtime: int, size: int = 0,
          link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size, info.linkname = kind, mode, mtime, size, link
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add_dirs(tar: tarfile.TarFile, dirs: list[str], mtime: int) -> None:
    for d in dirs:
        tar.addfile(_info(d, tarfile.DIRTYPE, 0o755, mtime))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int, mtime: int) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, mode, mtime, len(data)), io.BytesIO(data))


def _server_layer(out: Path, busybox: bytes, mtime: int) -> None:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_dirs(tar, ["bin", "srv", WWW, "tmp"], mtime)
        _add_bytes(tar, "bin/busybox", busybox, 0o755, mtime)
        # a passwd/group for the unprivileged user the server runs as
        _add_dirs(tar, ["etc"], mtime)
        _add_bytes(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644, mtime)
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"
                   b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644, mtime)


def _objects(repo: Repo, commit: str) -> list[tuple[str, Path]]:
    """(archive path, source file) of every object of ``commit`` (not its parents)."""
    from atomicedge.ostree.walk import reachable
    out = []
    for csum, kind in reachable(repo, commit):
        src = repo.object_path(csum, kind)
        out.append((f"{csum[:2]}/{src.name}", src))
    meta = repo.object_path(commit, ObjectType.COMMIT_META)
    if meta.exists():
        out.append((f"{commit[:2]}/{meta.name}", meta))
    return sorted(out)


def _repo_layer(out: Path, repo: Repo, ref: str, commit: str, mtime: int) -> None:
    objects = _objects(repo, commit)
    base = f"{WWW}/repo"
    prefixes = sorted({name[:2] for name, _ in objects})
    ref_dirs = [f"{base}/refs/heads/" + "/".join(ref.split("/")[:i])
                for i in range(1, ref.count("/") + 1)]
    doc = json.dumps(compose_json(repo, ref, commit), indent=2).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, f"{WWW}/compose.json", doc, 0o644, mtime)
        _add_dirs(tar, [base, f"{base}/objects", f"{base}/refs", f"{base}/refs/heads",
                        f"{base}/refs/remotes", f"{base}/refs/mirrors", f"{base}/tmp",
                        f"{base}/extensions", f"{base}/state", *ref_dirs], mtime)
        _add_bytes(tar, f"{base}/config", b"[core]\nrepo_version=1\nmode=archive-z2\n", 0o644,
                   mtime)
        _add_bytes(tar, f"{base}/refs/heads/{ref}", f"{commit}\n".encode(), 0o644, mtime)
        _add_dirs(tar, [f"{base}/objects/{p}" for p in prefixes], mtime)
        for name, src in objects:
            size = src.stat().st_size
            with open(src, "rb") as fh:
                tar.addfile(_info(f"{base}/objects/{name}", tarfile.REGTYPE, 0o644, mtime,
                                  size), fh)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _config(repo: Repo, ref: str, commit: str, diff_ids: list[str], server: str,
            created: str, arch: str) -> dict[str, object]:
    c = repo.load_commit(commit)
    labels = {"org.opencontainers.image.title": ref, "org.opencontainers.image.version":
              c.version or "", "org.opencontainers.image.created": created,
              "org.opencontainers.image.description": "OSTree repository of the commit, "
              f"served over HTTP on port {PORT} at /repo/",
              "com.atomicedge.ostree.ref": ref, "com.atomicedge.ostree.commit": commit,
              "com.atomicedge.server": f"{SERVER_PACKAGE} {server}"}
    cmd = ["/bin/busybox", "httpd", "-f", "-v", "-p", str(PORT), "-h", f"/{WWW}"]
    # httpd is PID 1 without a SIGTERM handler (the kernel drops TERM for it) and holds no
    # state: SIGKILL stops it at once instead of after podman's 10 s grace period
    return {"created": created, "architecture": arch, "os": "linux",
            "config": {"User": USER, "ExposedPorts": {f"{PORT}/tcp": {}}, "Cmd": cmd,
                       "WorkingDir": f"/{WWW}", "Labels": labels,
                       "StopSignal": "SIGKILL"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
            "history": [{"created": created, "created_by": f"atomicedge: {SERVER_PACKAGE} "
                         f"{server} (httpd)"},
                        {"created": created, "created_by": f"atomicedge: ostree repo, {ref} "
                         f"at {commit}"}]}


def write_container(repo: Repo, ref: str, commit: str, output: Path, state: AptState,
                    cache: Path, ref_name: str) -> Image:
    """Write the OCI archive of ``commit`` to ``output`` (atomically)."""
    if not repo.is_archive:
        raise UsageError(f"{repo.path} is not an archive-mode repository",
                         "edge-container serves an archive repo; compose into a new --repo")
    busybox, server = fetch_server(state, cache)
    ts = repo.load_commit(commit).timestamp
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edge-container-", dir=output.parent))
    try:
        layers = [work / "server.tar", work / "repo.tar"]
        _server_layer(layers[0], busybox, ts)
        _repo_layer(layers[1], repo, ref, commit, ts)
        diff_ids = [_digest(p) for p in layers]
        config = json.dumps(_config(repo, ref, commit, diff_ids, server, created, state.arch),
                            sort_keys=True).encode()
        cfg_digest = hashlib.sha256(config).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MEDIA["manifest"],
            "config": {"mediaType": MEDIA["config"], "digest": f"sha256:{cfg_digest}",
                       "size": len(config)},
            "layers": [{"mediaType": MEDIA["layer"], "digest": f"sha256:{d}",
                        "size": p.stat().st_size} for d, p in zip(diff_ids, layers, strict=True)]},
            sort_keys=True).encode()
        man_digest = hashlib.sha256(manifest).hexdigest()
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": MEDIA["manifest"], "digest": f"sha256:{man_digest}",
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}).encode()
        tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644, ts)
            _add_bytes(tar, "index.json", index, 0o644, ts)
            _add_dirs(tar, ["blobs", "blobs/sha256"], ts)
            _add_bytes(tar, f"blobs/sha256/{cfg_digest}", config, 0o644, ts)
            _add_bytes(tar, f"blobs/sha256/{man_digest}", manifest, 0o644, ts)
            for d, p in zip(diff_ids, layers, strict=True):
                with open(p, "rb") as fh:
                    tar.addfile(_info(f"blobs/sha256/{d}", tarfile.REGTYPE, 0o644, ts,
                                      p.stat().st_size), fh)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Image(output, f"sha256:{man_digest}", ref_name)


def push(image: Path, dest: str, *, tls_verify: bool = True) -> None:
    """``skopeo copy oci-archive:IMAGE docker://...`` (the registry push Image Builder lacks)."""
    check_destination(dest)
    tool.run(["skopeo", "copy", "--quiet", f"--dest-tls-verify={str(tls_verify).lower()}",
              f"oci-archive:{image}", dest], what=f"push to {dest}",
             hint="is the registry running and reachable? plain HTTP needs --tls-verify=false")
