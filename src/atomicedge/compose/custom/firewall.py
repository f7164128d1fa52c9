"""Firewall ports/services/zones written by firewalld's offline tool, ``firewall-offline-cmd``.

``firewall-offline-cmd`` has no ``--root`` option: it always edits /etc/firewalld. It is run
from the build host inside a bubblewrap mount namespace where the tree's etc/firewalld is bound
over /etc/firewalld, so the zone XML it writes lands in the image and the host is untouched.
The default zone comes from the tree's firewalld.conf when firewalld is installed there, else
firewalld's built-in default (``public``).
"""

from __future__ import annotations

from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.blueprint import Firewall


def _offline_cmd(tree: Path, args: list[str]) -> None:
    conf = tree / "etc/firewalld"
    argv = ["bwrap", "--dev-bind", "/", "/", "--bind", str(conf), "/etc/firewalld",
            "--die-with-parent", "firewall-offline-cmd", *args]
    tool.run(argv, what=f"firewall-offline-cmd {' '.join(args)}",
             hint="firewall-offline-cmd comes with the firewalld package (make setup)")


def apply(tree: Path, fw: Firewall) -> None:
    if fw.empty():
        return
    (tree / "etc/firewalld/zones").mkdir(parents=True, exist_ok=True)
    for zone in fw.zones:
        if not (tree / "etc/firewalld/zones" / f"{zone.name}.xml").exists() and \
                not Path(f"/usr/lib/firewalld/zones/{zone.name}.xml").exists():
            _offline_cmd(tree, [f"--new-zone={zone.name}"])
        for src in zone.sources:
            _offline_cmd(tree, [f"--zone={zone.name}", f"--add-source={src}"])
    # one call per option kind: the tool refuses to mix --add-port and --add-service in one run
    for args in ([f"--add-port={p.firewalld()}" for p in fw.ports],
                 [f"--add-service={s}" for s in fw.enabled_services],
                 [f"--remove-service={s}" for s in fw.disabled_services]):
        if args:
            _offline_cmd(tree, args)
