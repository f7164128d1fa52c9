"""GVariant codec: reference vectors from libostree, round trips, and hostile bytes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomicedge.errors import CorruptionError
from atomicedge.ostree import gvariant as gv
from atomicedge.ostree.objects import (
    Commit,
    DirMeta,
    DirTree,
    FileHeader,
    content_checksum,
    decode_ostreemeta,
)

ROOT_DIRMETA = "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"


def test_root_dirmeta_matches_libostree_bytes() -> None:
    data = DirMeta(0, 0, 0o40755).encode()
    assert data.hex() == "00000000" "00000000" "000041ed"
    assert hashlib.sha256(data).hexdigest() == ROOT_DIRMETA


def test_empty_dirtree_is_one_byte_with_known_checksum() -> None:
    data = DirTree().encode()
    assert data == b"\0"
    assert hashlib.sha256(data).hexdigest() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")


def test_hello_txt_content_checksum_matches_ostree() -> None:
    h = FileHeader(0, 0, 0o100644)
    assert content_checksum(h, b"hello\n") == (
        "44f778e59f0a4748d6b0c90a47347212a231c4ad1e8f7ea5c5dffc7749153a6b")
    link = FileHeader(0, 0, 0o120777, "hello.txt")
    assert content_checksum(link).startswith("f66efa49")


def test_reference_commit_is_reproduced_byte_for_byte() -> None:
    hello = "44f778e59f0a4748d6b0c90a47347212a231c4ad1e8f7ea5c5dffc7749153a6b"
    tree = DirTree((("hello.txt", hello),
                    ("link", content_checksum(FileHeader(0, 0, 0o120777, "hello.txt")))),
                   (("sub", "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                     ROOT_DIRMETA),))
    assert len(tree.encode()) == 155
    commit = Commit(hashlib.sha256(tree.encode()).hexdigest(), ROOT_DIRMETA,
                    {"ostree.ref-binding": gv.Variant("as", ["main"])}, None, "subj", "body",
                    1577836800)
    data = commit.encode()
    # layout of libostree's worked example: a{sv} of 35 bytes, subject/body, BE timestamp at
    # 48, two raw checksums, then the reversed framing offsets 58 2d 28 23 23 23
    assert len(data) == 126
    assert data[:19] == b"ostree.ref-binding\0"
    assert data[35:45] == b"subj\0body\0"
    assert data[48:56] == bytes.fromhex("000000005e0be100")
    assert data[88:120] == bytes.fromhex(ROOT_DIRMETA)
    assert data[120:] == bytes.fromhex("582d28232323")
    assert Commit.decode(data) == commit


def test_bare_user_ostreemeta_with_xattrs_matches_reference() -> None:
    raw = bytes.fromhex("00000000" "00000000" "000081a4" "757365722e616c70686100" "41" "0b"
                        "757365722e7a65746100" "5a" "0a" "0d19")
    uid, gid, mode, xattrs = decode_ostreemeta(raw)
    assert (uid, gid, mode) == (0, 0, 0o100644)
    assert xattrs == ((b"user.alpha\0", b"A"), (b"user.zeta\0", b"Z"))


# --- property tests -------------------------------------------------------------------

TYPES: list[tuple[str, Any]] = [
    ("y", st.integers(0, 255)),
    ("b", st.booleans()),
    ("q", st.integers(0, 0xFFFF)),
    ("i", st.integers(-(2**31), 2**31 - 1)),
    ("t", st.integers(0, 2**64 - 1)),
    ("s", st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]))),
    ("ay", st.binary(max_size=300)),
    ("as", st.lists(st.text(alphabet="abc\u00e9", max_size=5), max_size=8)),
    ("a(say)", st.lists(st.tuples(st.text(alphabet="xyz", max_size=4),
                                  st.binary(min_size=32, max_size=32)), max_size=20)),
    ("(uuua(ayay))", st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                               st.integers(0, 2**32 - 1),
                               st.lists(st.tuples(st.binary(max_size=9), st.binary(max_size=9)),
                                        max_size=4))),
    ("a{sv}", st.dictionaries(st.text(alphabet="kK.", min_size=1, max_size=6),
                              st.one_of(st.integers(0, 2**64 - 1).map(lambda v: gv.Variant("t", v)),
                                        st.text(alphabet="ab", max_size=300).map(
                                            lambda v: gv.Variant("s", v)),
                                        st.lists(st.binary(max_size=40), max_size=5).map(
                                            lambda v: gv.Variant("aay", v))),
                              max_size=6)),
    ("(tayas)", st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=600),
                          st.lists(st.text(alphabet="q", max_size=3), max_size=4))),
    ("m(ys)", st.one_of(st.none(), st.tuples(st.integers(0, 255), st.text(alphabet="z")))),
]


@pytest.mark.parametrize("sig,strategy", TYPES, ids=[t for t, _ in TYPES])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_encode_then_decode_round_trips(sig: str, strategy: Any, data: st.DataObject) -> None:
    value = data.draw(strategy)
    encoded = gv.encode(sig, value)
    decoded = gv.decode(sig, encoded)
    assert gv.encode(sig, decoded) == encoded
    if sig in ("y", "b", "q", "i", "t", "s", "ay"):
        assert decoded == value


@pytest.mark.parametrize("sig", ["(a{sv}aya(say)sstayay)", "(a(say)a(sayay))", "(uuua(ayay))",
                                 "(tuuuusa(ayay))", "a{sv}", "(a(s(taya{sv}))a{sv})", "v",
                                 "m(ts)", "as"])
@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_random_bytes_only_raise_the_typed_error(sig: str, blob: bytes) -> None:
    try:
        value = gv.decode(sig, blob)
    except gv.GVariantError:
        return
    assert gv.encode(sig, value) == blob  # anything accepted is normal form


def test_non_normal_form_is_rejected() -> None:
    good = gv.encode("(sas)", ("a", ["b"]))
    padded = good[:-1] + b"\0" + good[-1:]
    with pytest.raises(gv.GVariantError):
        gv.decode("(sas)", padded)
    with pytest.raises(gv.GVariantError):
        gv.decode("b", b"\x02")
    with pytest.raises(gv.GVariantError):
        gv.decode("s", b"a\0b\0")


def test_deep_nesting_is_refused_not_crashing() -> None:
    sig = "v"
    data = gv.encode("y", 1)
    inner = "y"
    for _ in range(200):
        data = data + b"\0" + inner.encode()
        inner = "v"
    with pytest.raises(gv.GVariantError):
        gv.decode(sig, data)


NAMES = st.text(alphabet=st.sampled_from(list("abcé.-_x/")), min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(files=st.lists(st.tuples(NAMES, st.binary(min_size=32, max_size=32)), max_size=12),
       dirs=st.lists(st.tuples(NAMES, st.binary(min_size=32, max_size=32),
                               st.binary(min_size=32, max_size=32)), max_size=6),
       flip=st.integers(0, 2000), shuffle=st.booleans())
def test_fast_dirtree_decoder_agrees_with_generic(files: list[Any], dirs: list[Any], flip: int,
                                                  shuffle: bool) -> None:
    """The hand-framed hot-path decoder accepts exactly what the generic strict one does."""
    value = (files if shuffle else sorted(files, key=lambda e: e[0].encode()),
             sorted(dirs, key=lambda e: e[0].encode()))
    data = bytearray(gv.encode("(a(say)a(sayay))", value))
    if data and flip < len(data) * 3:
        data[flip % len(data)] ^= 1 << (flip % 8)
    results = []
    for decoder in (DirTree.decode, DirTree._decode_slow):
        try:
            results.append(("ok", decoder(bytes(data))))
        except CorruptionError:  # GVariantError, FormatError and bad names alike
            results.append(("error", None))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
