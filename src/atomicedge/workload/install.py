"""Put the Quadlet generators into an OS tree (called by ``device.image.install_device_files``).

The tree gets podman's generator paths (``podman-system-generator``, ``podman-user-generator``)
as sh wrappers around :mod:`atomicedge.workload.quadlet`, the user unit the generated rootless
units wait on (``podman-user-wait-network-online.service``), and Quadlet's directories under
``/etc/containers/systemd`` (``users/`` for units every rootless user runs). The wrappers run the
atomicedge code the image carries in ``/usr/lib/atomicedge/python``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FILES = Path(__file__).parent / "files"
GENERATORS = {"usr/lib/systemd/system-generators/podman-system-generator":
              "podman-system-generator.sh",
              "usr/lib/systemd/user-generators/podman-user-generator":
              "podman-user-generator.sh"}
USER_UNITS = ("podman-user-wait-network-online.service",)


def install_workload_files(tree: Path) -> None:
    """Install the generators and Quadlet's directories into ``tree`` (an ostree-style tree:
    defaults for ``/etc`` live in ``usr/etc`` when that exists)."""
    for rel, src in GENERATORS.items():
        dest = tree / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / src, dest)
        os.chmod(dest, 0o755)
    user = tree / "usr/lib/systemd/user"
    user.mkdir(parents=True, exist_ok=True)
    for unit in USER_UNITS:
        shutil.copyfile(FILES / unit, user / unit)
        os.chmod(user / unit, 0o644)
    etc = tree / "usr" / "etc" if (tree / "usr" / "etc").is_dir() else tree / "etc"
    (etc / "containers" / "systemd" / "users").mkdir(parents=True, exist_ok=True)
