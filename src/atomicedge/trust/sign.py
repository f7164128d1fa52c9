"""Commit and summary signatures: GPG (through :mod:`gpg`) and ed25519 (``ostree.sign``).

Storage is libostree's: signatures are appended to ``aay`` lists in the commit's detached
metadata (``ostree.gpgsigs``, ``ostree.sign.ed25519``) or in ``summary.sig``. An ed25519
secret key is base64 of ``seed(32) || public(32)`` (libsodium layout), a public key base64
of 32 bytes, a signature 64 raw bytes over the exact object bytes.

Verification is a pure decision over (data, signatures, trusted keys): *any* signature valid
under *any* trusted key accepts, so a fleet can trust an old and a new key during rotation.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from atomicedge.errors import CorruptionError, UsageError
from atomicedge.ostree.gvariant import Variant
from atomicedge.trust import gpg

GPG_KEY = "ostree.gpgsigs"
ED25519_KEY = "ostree.sign.ed25519"


def _b64(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what} is not valid base64") from None
    if len(raw) != size:
        raise UsageError(f"{what} has {len(raw)} bytes, expected {size}",
                         "ed25519 secret keys are 64 bytes (seed+public), public keys 32")
    return raw


def ed25519_signing_key(secret_b64: str) -> nacl.signing.SigningKey:
    raw = _b64(secret_b64, 64, "ed25519 secret key")
    key = nacl.signing.SigningKey(raw[:32])
    if bytes(key.verify_key) != raw[32:]:
        raise UsageError("ed25519 secret key: public half does not match the seed")
    return key


def ed25519_generate() -> tuple[str, str]:
    """A new (secret, public) key pair, both base64, in ostree's layout."""
    key = nacl.signing.SigningKey.generate()
    secret = bytes(key) + bytes(key.verify_key)
    return base64.b64encode(secret).decode(), base64.b64encode(bytes(key.verify_key)).decode()


def ed25519_public(secret_b64: str) -> str:
    return base64.b64encode(bytes(ed25519_signing_key(secret_b64).verify_key)).decode()


def ed25519_sign(data: bytes, secret_b64: str) -> bytes:
    return ed25519_signing_key(secret_b64).sign(data).signature


def ed25519_verify(data: bytes, signatures: list[bytes], public_keys: list[str]) -> bool:
    keys = [nacl.signing.VerifyKey(_b64(k, 32, "ed25519 public key")) for k in public_keys]
    for sig in signatures:
        if len(sig) != 64:
            continue
        for key in keys:
            try:
                key.verify(data, sig)
                return True
            except nacl.exceptions.BadSignatureError:
                continue
    return False


def _sig_list(meta: dict[str, Any] | None, key: str) -> list[bytes]:
    if not meta or key not in meta:
        return []
    v = meta[key]
    if not isinstance(v, Variant) or v.type != "aay":
        raise CorruptionError(f"signature entry {key} has type "
                              f"{getattr(v, 'type', '?')}, expected aay")
    return [bytes(s) for s in v.value]


def add_signature(meta: dict[str, Any] | None, key: str, sig: bytes) -> dict[str, Any]:
    """Detached metadata with ``sig`` appended under ``key`` (no duplicates)."""
    out = dict(meta or {})
    sigs = _sig_list(out, key)
    if sig not in sigs:
        sigs.append(sig)
    out[key] = Variant("aay", sigs)
    return out


@dataclass
class TrustPolicy:
    """What a pull (or ``sign --verify``) requires of a commit or a summary."""

    gpg: bool = False
    ed25519: bool = False
    gpg_keyrings: list[Path] = field(default_factory=list)
    ed25519_keys: list[str] = field(default_factory=list)

    @property
    def required(self) -> bool:
        return self.gpg or self.ed25519


def verify(what: str, data: bytes, meta: dict[str, Any] | None, policy: TrustPolicy) -> None:
    """Raise CorruptionError unless ``data`` carries a signature the policy accepts."""
    if not policy.required:
        return
    if policy.ed25519:
        if not policy.ed25519_keys:
            raise UsageError(f"cannot verify {what}: no trusted ed25519 key configured",
                             "set verification-ed25519-key on the remote")
        sigs = _sig_list(meta, ED25519_KEY)
        if not sigs:
            raise CorruptionError(f"{what} is not signed (no {ED25519_KEY})",
                                  "refusing unsigned content")
        if not ed25519_verify(data, sigs, policy.ed25519_keys):
            raise CorruptionError(f"{what}: no valid ed25519 signature by a trusted key",
                                  "the content was tampered with or signed by another key")
    if policy.gpg:
        if not policy.gpg_keyrings:
            raise UsageError(f"cannot verify {what}: no trusted GPG keys for this remote",
                             "import them with: atomicedge repo remote gpg-import")
        sigs = _sig_list(meta, GPG_KEY)
        if not sigs:
            raise CorruptionError(f"{what} is not GPG-signed", "refusing unsigned content")
        if not any(gpg.verify_detached(data, s, policy.gpg_keyrings) for s in sigs):
            raise CorruptionError(f"{what}: no valid GPG signature by a trusted key",
                                  "the content was tampered with or signed by another key")
