"""A local container registry for the lab, the demo and the tests, and images to put in it.

The registry is Debian's ``docker-registry`` (distribution 2.8, plain HTTP), started by
:meth:`Registry.start` on a given address and port, optionally inside a network namespace (the
lab's host side, so lab devices reach it at ``<lab host ip>:<port>``; or the host's loopback,
which QEMU guests reach as ``10.0.2.2:<port>``), with its storage in a given directory. The
storage outlives the process: a registry stopped and started again on another address (or in
another namespace) serves the same images. It is stopped by its PID::

    with Registry.start(tmp / "registry", "127.0.0.1") as reg:       # free port
        reg.push_busybox_image("app:v1", files={"www/index.html": "v1\\n"},
                               cmd=["/bin/httpd", "-f", "-p", "8080", "-h", "/www"])
        reg.retag("app:v1", "app:prod")
        reg.ref("app:prod")            # '127.0.0.1:39411/app:prod'

Images are built on the host from Debian content only (no downloads): BusyBox from
``busybox-static`` with relative links for every applet (absolute ones break inside an image),
plus the given files, written as an OCI image layout with fixed owners and mtimes (the same
inputs give the same image) and pushed with ``skopeo copy`` (``--dest-tls-verify=false``).
skopeo runs in the registry's network namespace. Every outside program goes through
:mod:`atomicedge.runner`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from atomicedge import runner as tool
from atomicedge.errors import NotFoundError, ToolError, UsageError
from atomicedge.lab import labnet

BUSYBOX = Path("/bin/busybox")
START_TIMEOUT = 60.0
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                   r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MEDIA = {"manifest": "application/vnd.oci.image.manifest.v1+json",
          "config": "application/vnd.oci.image.config.v1+json",
          "layer": "application/vnd.oci.image.layer.v1.tar"}
T = TypeVar("T")
_ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                     "application/vnd.docker.distribution.manifest.v2+json",
                     "application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json"])


def check_name(name: str) -> str:
    """``repo/path:tag`` (what follows ``HOST:PORT/`` in a reference) or UsageError."""
    if not _NAME.match(name):
        raise UsageError(f"image name {name!r} is not NAME:TAG",
                         "lower-case path components and a tag, e.g. app:v1 or edge/app:prod")
    return name


def _netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    if netns is None:
        return list(argv)
    path = labnet.netns_path(netns)
    if not path.exists():
        raise NotFoundError(f"network namespace {netns} does not exist",
                            "bring the lab network up first")
    return ["nsenter", f"--net={path}", "--", *argv]


def _in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    return fn() if netns is None else labnet.in_netns(netns, fn)


def free_port(bind: str, netns: str | None = None) -> int:
    """A TCP port nobody listens on at ``bind`` (in ``netns``) right now."""
    def pick() -> int:
        with socket.socket() as s:
            s.bind((bind, 0))
            return int(s.getsockname()[1])
    return _in_netns(netns, pick)


@dataclass
class Registry:
    """A running ``docker-registry``: where it listens, its storage, its PID."""

    storage: Path
    bind: str
    port: int
    netns: str | None
    pid: int
    log: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    def start(cls, storage: Path, bind: str = "127.0.0.1", port: int = 0,
              netns: str | None = None, timeout: float = START_TIMEOUT) -> Registry:
        """Serve ``storage`` on ``bind:port`` (0: a free port), inside ``netns`` (a name under
        /run/netns) if given; returns once ``GET /v2/`` answers."""
        storage = storage.absolute()
        storage.mkdir(parents=True, exist_ok=True)
        port = port or free_port(bind, netns)
        config = storage.parent / f".{storage.name}-registry-{port}.yml"
        log = storage.parent / f"{storage.name}-registry-{port}.log"
        config.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n"
            f"    enabled: true\nhttp:\n  addr: {bind}:{port}\n")
        argv = _netns_argv(netns, ["docker-registry", "serve", str(config)])
        with open(log, "ab") as out:
            try:
                # nsenter execs the registry: the PID is docker-registry's own
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except FileNotFoundError:
                raise ToolError("docker-registry is not installed", tool.MISSING_HINT) from None
        reg = cls(storage, bind, port, netns, proc.pid, log, proc)
        try:
            reg._wait_ready(timeout)
        except BaseException:
            reg.stop()
            raise
        return reg

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._proc is not None and self._proc.poll() is not None:
                raise ToolError(f"docker-registry on {self.host} exited "
                                f"({self._proc.returncode})",
                                "is the port taken? see the log",
                                stderr=self.log.read_text(errors="replace")[-2000:])
            if time.monotonic() > deadline:
                raise ToolError(f"docker-registry on {self.host} did not answer within "
                                f"{timeout:.0f} s", stderr=self.log.read_text(
                                    errors="replace")[-2000:])
            time.sleep(0.05)

    def ready(self) -> bool:
        """``GET /v2/`` answers (from the registry's own network namespace)."""
        def probe() -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as resp:
                    return bool(resp.status == 200)
            except (OSError, urllib.error.URLError):
                return False
        return _in_netns(self.netns, probe)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the registry's PID, SIGKILL after ``timeout`` (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- names -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``ip:port`` as clients on the same network write it."""
        return f"{self.bind}:{self.port}"

    def ref(self, name: str) -> str:
        """``app:v1`` -> ``HOST:PORT/app:v1``."""
        return f"{self.host}/{check_name(name)}"

    # -- images ----------------------------------------------------------------------------

    def skopeo(self, *args: str, what: str) -> subprocess.CompletedProcess[str]:
        """``skopeo ARGS`` in the registry's network namespace."""
        return tool.run(_netns_argv(self.netns, ["skopeo", *args]), what=what,
                        hint="is the registry running? (skopeo is in deps/apt/compose.txt)",
                        timeout=300)

    def push_oci(self, layout: Path, name: str) -> str:
        """Push the single image of OCI layout directory ``layout``; returns its digest as the
        registry stores it (``sha256:...``)."""
        self.skopeo("copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}",
                    f"docker://{self.ref(name)}", what=f"push {name} to {self.host}")
        return self.digest(name)

    def push_busybox_image(self, name: str, *, files: Mapping[str, str],
                           cmd: Sequence[str], labels: Mapping[str, str] | None = None,
                           busybox: Path = BUSYBOX) -> str:
        """Build a BusyBox image with ``files`` (image path -> text) and ``cmd`` and push it as
        ``name`` (``app:v1``); returns its digest."""
        check_name(name)
        with tempfile.TemporaryDirectory(prefix=".image-", dir=self.storage.parent) as tmp:
            write_busybox_layout(Path(tmp) / "oci", files=files, cmd=cmd,
                                 labels=labels or {}, busybox=busybox)
            return self.push_oci(Path(tmp) / "oci", name)

    def retag(self, src: str, dst: str) -> str:
        """Point tag ``dst`` at the image of ``src`` (``app:v2`` -> ``app:prod``), as
        ``skopeo copy`` between two names of this registry; returns the digest."""
        self.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{self.ref(src)}", f"docker://{self.ref(dst)}",
                    what=f"tag {src} as {dst} in {self.host}")
        return self.digest(dst)

    def _manifest(self, name: str, method: str) -> tuple[str, bytes]:
        repo, _, tag = check_name(name).rpartition(":")

        def get() -> tuple[str, bytes]:
            req = urllib.request.Request(f"http://{self.host}/v2/{repo}/manifests/{tag}",
                                         method=method, headers={"Accept": _ACCEPT})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return str(resp.headers["Docker-Content-Digest"]), resp.read(4 << 20)
            except urllib.error.HTTPError as exc:
                raise NotFoundError(f"{self.ref(name)}: {exc.code} {exc.reason}") from None
        return _in_netns(self.netns, get)

    def digest(self, name: str) -> str:
        """The manifest digest ``name`` points at (``HEAD /v2/<repo>/manifests/<tag>``)."""
        return self._manifest(name, "HEAD")[0]

    def image_id(self, name: str) -> str:
        """The config digest of ``name`` without ``sha256:``: the image ID podman shows for
        it once pulled."""
        config = json.loads(self._manifest(name, "GET")[1])["config"]["digest"]
        return str(config).removeprefix("sha256:")


# -- building images ---------------------------------------------------------------------------

def is_static(binary: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    with open(binary, "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:     # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3    # PT_INTERP
               for i in range(phnum))


def _applets(busybox: Path) -> list[str]:
    out = tool.run([str(busybox), "--list"], what="busybox --list", timeout=30).stdout
    return sorted({a for a in out.split() if re.match(r"^[a-z0-9_.\[-]+$", a)} - {"busybox"})


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _check_path(path: str) -> str:
    norm = os.path.normpath(path.lstrip("/"))
    if norm.startswith("..") or norm in (".", "") or path.startswith("../"):
        raise UsageError(f"image file {path!r} is outside the image",
                         "give a relative path inside the image, e.g. www/index.html")
    return norm


def _layer(out: Path, busybox: Path, files: Mapping[str, str]) -> None:
    data = busybox.read_bytes()
    extra = {_check_path(p): text.encode() for p, text in files.items()}
    dirs = {"bin", "dev", "etc", "proc", "run", "sys", "tmp"}
    dirs |= {str(p) for f in extra for p in Path(f).parents if str(p) != "."}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for applet in _applets(busybox):
            tar.addfile(_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        base = {"etc/passwd": b"root:x:0:0:root:/:/bin/sh\n"
                              b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                "etc/group": b"root:x:0:\nnogroup:x:65534:\n"}
        for name, blob in sorted({**base, **extra}.items()):
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(blob)), io.BytesIO(blob))


def _blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return digest


def write_busybox_layout(layout: Path, *, files: Mapping[str, str], cmd: Sequence[str],
                         labels: Mapping[str, str], busybox: Path = BUSYBOX) -> str:
    """An OCI image layout at ``layout`` (one image, one layer); returns the manifest digest.
    Deterministic: fixed owners and mtimes, sorted entries."""
    if not busybox.is_file() or not is_static(busybox):
        raise NotFoundError(f"{busybox} is not a statically linked BusyBox",
                            "apt-get install busybox-static (deps/apt/compose.txt)")
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tar = layout / "layer.tar"
    _layer(tar, busybox, files)
    layer = tar.read_bytes()
    tar.unlink()
    diff = _blob(blobs, layer)
    config = json.dumps({
        "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"], "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": "atomicedge.lab.registry: busybox-static + files"}]},
        sort_keys=True).encode()
    cfg = _blob(blobs, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": _MEDIA["manifest"],
        "config": {"mediaType": _MEDIA["config"], "digest": f"sha256:{cfg}",
                   "size": len(config)},
        "layers": [{"mediaType": _MEDIA["layer"], "digest": f"sha256:{diff}",
                    "size": len(layer)}]}, sort_keys=True).encode()
    man = _blob(blobs, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": _MEDIA["manifest"], "digest": f"sha256:{man}", "size": len(manifest)}]}))
    return f"sha256:{man}"


def remove_storage(storage: Path) -> None:
    """Delete a registry's storage and the config/log files :meth:`Registry.start` left."""
    shutil.rmtree(storage, ignore_errors=True)
    for extra in storage.parent.glob(f".{storage.name}-registry-*.yml"):
        extra.unlink(missing_ok=True)
