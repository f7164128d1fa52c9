"""The pure-Python bspatch a device uses (no bsdiff4 on Debian) against bsdiff4's C patcher."""

from __future__ import annotations

import bsdiff4.core as bscore
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomicedge.delta.bsdiff import _offtout, add_bytes, bsdiff, bspatch
from atomicedge.errors import CorruptionError


@st.composite
def edited(draw: st.DrawFn) -> tuple[bytes, bytes]:
    old = draw(st.binary(min_size=0, max_size=4000))
    new = bytearray(old)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, len(new)))
        if op == "flip" and at < len(new):
            new[at] = (new[at] + draw(st.integers(1, 255))) & 0xFF
        elif op == "insert":
            new[at:at] = draw(st.binary(min_size=1, max_size=300))
        else:
            del new[at:at + draw(st.integers(1, 300))]
    return old, bytes(new)


@settings(max_examples=150, deadline=None)
@given(edited())
def test_device_bspatch_rebuilds_what_bsdiff4_diffed(pair: tuple[bytes, bytes]) -> None:
    old, new = pair
    patch = bsdiff(old, new)
    assert bspatch(old, patch, len(new)) == new


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_bytewise_addition_matches_the_c_patcher(a: bytes, b: bytes) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    assert add_bytes(a, b) == bytes((x + y) & 0xFF for x, y in zip(a, b, strict=True))
    # bsdiff4's C core: diff bytes added to the old bytes, one triple covering everything
    ctrl = bscore.encode_int64(n) + bscore.encode_int64(0) + bscore.encode_int64(0)
    assert bytes(bscore.patch(a, n, ctrl, b, b"")) == add_bytes(a, b)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.binary(min_size=1, max_size=300), st.integers(-400, 400))
def test_old_bytes_outside_the_file_count_as_zero_like_the_c_patcher(
        old: bytes, diff: bytes, seek: int) -> None:
    # a seek before or past the old file is legal in endsley's format (ostree's deltas)
    n = len(diff)
    patch = _offtout(0) + _offtout(0) + _offtout(seek) + _offtout(n) + _offtout(0) + \
        _offtout(0) + diff
    ctrl = b"".join(bscore.encode_int64(v) for v in (0, 0, seek, n, 0, 0))
    assert bspatch(old, patch, n) == bytes(bscore.patch(old, n, ctrl, diff, b""))


@pytest.mark.parametrize("patch, why", [
    (b"\x01" * 10, "truncated"),
    (_offtout(-1) + _offtout(0) + _offtout(0), "invalid control"),
    (_offtout(0) + _offtout(50) + _offtout(0) + b"\x00" * 50, "invalid control"),
])
def test_hostile_bsdiff_streams_are_refused(patch: bytes, why: str) -> None:
    with pytest.raises(CorruptionError, match=why):
        bspatch(b"abc", patch, 10)
