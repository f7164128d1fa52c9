"""Shared fixtures of the QEMU tests: the VM directory, the update server, the gateway disks.

* ``vm_dir`` (session): ``$ATOMICEDGE_VM_DIR`` for every VM of the session; at the end every
  VM still running in it is killed (by the QEMU pid recorded for it).
* ``served`` (session): the update channel. A production repository (objects hard-linked from
  the composed gateway repository, refs and summary its own) served by
  :class:`atomicedge.publish.serve.Server` on the host's 127.0.0.1; the guest reaches it as
  ``http://10.0.2.2:PORT`` through QEMU's user network (nothing leaves the machine).
  ``served.publish(commit)`` moves the ref and regenerates the summary (``summary -u``), which
  is what publishing an update is; it starts with gateway v1 published.
* ``v1_base_qcow2`` (session): the composed gateway v1 as a qcow2 (``compose/disk.py``: the
  device code deploys the commit, GRUB BIOS + UEFI, the ``--vm-agent`` command channel,
  ``--dhcp`` so the device reaches its update server), update remote = ``served``.
* ``v1_qcow2`` (module): a fresh copy-on-write overlay of that disk for one test module (so
  every module boots a pristine v1 without rebuilding it), with v1 published again.

VM names must differ between modules (each module boots its own).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atomicedge.compose import disk
from atomicedge.lab import vm
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server

BOOT_TIMEOUT = 900.0   # TCG on 2 busy cores: a boot is 30-60 s idle, minutes when loaded


@pytest.fixture(scope="session")
def vm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("vms")
    old = os.environ.get("ATOMICEDGE_VM_DIR")
    os.environ["ATOMICEDGE_VM_DIR"] = str(d)
    yield d
    for row in vm.ls():
        vm.kill(str(row["name"]))
    if old is None:
        os.environ.pop("ATOMICEDGE_VM_DIR")
    else:
        os.environ["ATOMICEDGE_VM_DIR"] = old


@dataclass
class Published:
    """The served production repository of the update channel."""

    repo: Path
    ref: str
    server: Server

    @property
    def guest_url(self) -> str:
        return f"http://10.0.2.2:{self.server.port}"

    def publish(self, commit: str) -> None:
        """Make ``commit`` the published head of the ref (ref, then ``summary -u``)."""
        repo = Repo.open(self.repo)
        repo.set_ref(self.ref, commit)
        pubsum.update(repo)

    def head(self) -> str | None:
        return Repo.open(self.repo).read_ref(self.ref)


def _production_copy(src: Path, dest: Path) -> None:
    """objects/ and deltas/ hard-linked (immutable, content-addressed), the rest copied."""
    def copy(s: str, d: str) -> object:
        if s[len(str(src)):].split(os.sep)[1] in ("objects", "deltas"):
            os.link(s, d)
            return d
        return shutil.copy2(s, d)
    shutil.copytree(src, dest, copy_function=copy, symlinks=True)


@pytest.fixture(scope="session")
def served(gateway_images, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
           ) -> Iterator[Published]:
    prod = tmp_path_factory.mktemp("channel") / "repo"
    _production_copy(gateway_images.repo, prod)
    with Server(prod) as server:
        pub = Published(prod, gateway_images.ref, server)
        pub.publish(gateway_images.v1)
        yield pub


@pytest.fixture(scope="session")
def v1_base_qcow2(gateway_images, served: Published,  # type: ignore[no-untyped-def]
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("disk") / "gateway-v1.qcow2"
    start = time.monotonic()
    disk.build(disk.DiskSpec(gateway_images.repo, gateway_images.ref, gateway_images.v1, out,
                             "qcow2", update_url=served.guest_url,
                             kargs=disk.kargs_of(Repo.open(gateway_images.repo),
                                                 gateway_images.v1), agent=True, dhcp=True))
    print(f"\nqcow2 built in {time.monotonic() - start:.1f} s, {out.stat().st_size >> 20} MiB")
    return out


@pytest.fixture(scope="module")
def v1_qcow2(v1_base_qcow2: Path, served: Published, gateway_images,  # type: ignore[no-untyped-def]
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine gateway v1 disk for this module (qcow2 overlay on the session's disk)."""
    out = tmp_path_factory.mktemp("disk") / "gateway-v1-overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(v1_base_qcow2.resolve()), str(out)], check=True, timeout=120)
    served.publish(gateway_images.v1)
    return out
