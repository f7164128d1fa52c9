"""Composed images for the tests: the seed demo's gateway blueprints, built for real.

``examples/gateway-v1.toml`` and ``examples/gateway-v2.toml`` (v1 + strace) are composed with
the edge profile from the machine's Debian mirror into one archive repository, v2 with v1 as
its parent — exactly what ``make demo`` act 2 does. Both carry the seed's greenboot check
(``/etc/greenboot/check/required.d/01_check_upgrade.sh``): an update rolls back until
``/etc/greenboot/orig.txt`` is deleted on the device. The package trees are cached by the
compose cache, so only the first session on a machine pays for mmdebstrap.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, compose
from atomicedge.compose.validate import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REF = "debian/12/x86_64/edge"


@dataclass(frozen=True)
class GatewayImages:
    repo: Path      # archive repository holding both commits on REF (v2 is the tip)
    ref: str
    v1: str
    v2: str


def compose_gateway(workdir: Path) -> GatewayImages:
    repo = workdir / "repo"
    commits = []
    for name in ("gateway-v1.toml", "gateway-v2.toml"):
        bp = load(EXAMPLES / name)
        res = compose(ComposeRequest(blueprint=bp, repo=repo, sources=Sources.host(), ref=REF,
                                     parent=commits[-1] if commits else "none"))
        commits.append(res.commit)
    return GatewayImages(repo, REF, commits[0], commits[1])


_LOCK = Path(tempfile.gettempdir()) / "atomicedge-test-images.lock"


def shared_gateway(workdir: Path) -> GatewayImages:
    """Compose once per test session (a lock keeps concurrent sessions from racing mmdebstrap
    on the same cache entry)."""
    import fcntl
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return compose_gateway(workdir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.utime(_LOCK)
