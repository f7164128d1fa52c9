"""Seam for the ``gpg``/``gpgv`` binaries: detached binary signatures, keyrings.

OSTree keeps GPG signatures as *binary* detached OpenPGP signatures (``ostree.gpgsigs``)
over the raw bytes of a commit or of ``summary``. Signing needs a secret key in a GnuPG
home; verifying only needs a keyring of trusted public keys (``REMOTE.trustedkeys.gpg``),
which is what ``gpgv`` takes. Every command is logged and a failure raises ToolError.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path

from atomicedge import runner
from atomicedge.errors import ToolError

log = logging.getLogger(__name__)
GPG_TIMEOUT = 120.0  # seconds; signing, verifying and key generation are all quick


def _run(cmd: list[str], *, data: bytes | None = None, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        return runner.run_bytes(cmd, what=cmd[0], data=data, env=env, check=check,
                                timeout=GPG_TIMEOUT)
    except ToolError as exc:
        if "is not installed" in exc.message:
            raise ToolError(exc.message, "apt-get install gnupg gpgv") from None
        raise


def sign_detached(data: bytes, key_id: str, homedir: Path | None = None) -> bytes:
    """A binary detached signature of ``data`` by ``key_id``."""
    cmd = ["gpg", "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback",
           "--passphrase", ""]
    if homedir is not None:
        cmd += ["--homedir", str(homedir)]
    cmd += ["--local-user", key_id, "--digest-algo", "SHA512", "--detach-sign",
            "--output", "-", "-"]
    out = _run(cmd, data=data).stdout
    if not out:
        raise ToolError(f"gpg produced no signature for key {key_id}")
    return out


def verify_detached(data: bytes, signature: bytes, keyrings: list[Path]) -> bool:
    """True if ``signature`` is a good signature of ``data`` by a key in ``keyrings``."""
    if not keyrings:
        return False
    with tempfile.TemporaryDirectory(prefix="atomicedge-gpgv-") as tmp:
        sig = Path(tmp) / "sig"
        body = Path(tmp) / "data"
        sig.write_bytes(signature)
        body.write_bytes(data)
        cmd = ["gpgv", "--quiet"]
        for kr in keyrings:
            cmd += ["--keyring", str(kr.resolve())]
        cmd += [str(sig), str(body)]
        proc = _run(cmd, check=False, env={**os.environ, "LC_ALL": "C"})
        return proc.returncode == 0


def export_keys(homedir: Path | None, key_ids: list[str]) -> bytes:
    """Binary public keys of ``key_ids`` (for a remote's trusted keyring)."""
    cmd = ["gpg", "--batch", "--no-tty"]
    if homedir is not None:
        cmd += ["--homedir", str(homedir)]
    return _run([*cmd, "--export", *key_ids]).stdout


def import_to_keyring(keyring: Path, key_data: bytes) -> None:
    """Add (armored or binary) public keys to a keyring file gpgv can read."""
    with tempfile.TemporaryDirectory(prefix="atomicedge-gpg-") as home:
        os.chmod(home, 0o700)
        cmd = ["gpg", "--batch", "--no-tty", "--homedir", home, "--no-default-keyring",
               "--keyring", str(keyring.resolve()), "--import"]
        _run(cmd, data=key_data)


def generate_test_key(homedir: Path, name: str = "atomicedge test") -> str:
    """Create an unprotected ed25519 signing key in ``homedir``; returns its fingerprint."""
    homedir.mkdir(parents=True, exist_ok=True)
    os.chmod(homedir, 0o700)
    _run(["gpg", "--batch", "--no-tty", "--homedir", str(homedir), "--passphrase", "",
          "--quick-gen-key", f"{name} <{name.replace(' ', '-')}@example.invalid>",
          "ed25519", "sign", "never"])
    out = _run(["gpg", "--batch", "--no-tty", "--homedir", str(homedir), "--with-colons",
                "--list-secret-keys", name]).stdout.decode()
    fprs = [ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")]
    if not fprs:
        raise ToolError("gpg created no key")
    return fprs[-1]
