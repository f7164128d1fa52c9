"""systemd units enabled / disabled / masked with ``systemctl --root`` (the real tool).

``--root`` only edits symlinks under the tree's /etc/systemd/system from the [Install] sections,
no running systemd is involved (the build machine has none). A unit that is not shipped by any
package of the image is an error naming the unit, not a silent no-op.
"""

from __future__ import annotations

from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.blueprint import Services

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_OFFLINE": "1", "LC_ALL": "C"}


def _systemctl(tree: Path, verb: str, units: tuple[str, ...]) -> None:
    if not units:
        return
    tool.run(["systemctl", f"--root={tree}", "--no-reload", verb, *units],
             what=f"systemctl {verb} {' '.join(units)}", env=ENV,
             hint="is the unit shipped by a package of the image? add the package to [[packages]]")


def apply(tree: Path, services: Services, extra_enabled: tuple[str, ...] = ()) -> None:
    _systemctl(tree, "enable", tuple(dict.fromkeys(extra_enabled + services.enabled)))
    _systemctl(tree, "disable", services.disabled)
    _systemctl(tree, "mask", services.masked)
