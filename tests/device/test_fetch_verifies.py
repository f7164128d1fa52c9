"""A ``file://`` remote (USB stick, NFS) is no way around the remote's signature policy.

Before, ``device/fetch.py`` copied ``file://`` repositories object by object itself and never
looked at ``gpg-verify``/``sign-verify``: an unsigned (or forged) commit on a stick was deployed.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from devhelpers import commit_tiny

from atomicedge.cli.main import main
from atomicedge.device import sysroot as sr
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.trust import gpg, sign


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, err.getvalue()


@pytest.fixture
def device(tmp_path: Path) -> tuple[Path, Repo]:
    src = Repo.init(tmp_path / "src", "archive")
    commit_tiny(src, tmp_path, "1")
    rc, err = _cli("device", "install", "--sysroot", str(tmp_path / "s"), "--osname", "testos",
                   "--url", f"file://{src.path}", "--ref", "testos/stable")
    assert rc == 0, err
    return tmp_path / "s", src


def _set_remote(s: Path, **options: str) -> None:
    repo = sr.Sysroot.open(s).repo
    for key, value in options.items():
        repo.config.set('remote "origin"', key.replace("_", "-"), value)
    repo.write_config()


def _state(s: Path) -> list[str]:
    return [d.id for d in sr.Sysroot.open(s).deployments()]


@pytest.fixture
def trusted_gpg_key(tmp_path: Path) -> Iterator[bytes]:
    home = tmp_path / "gnupg"
    key = gpg.generate_test_key(home)
    yield gpg.export_keys(home, [key])
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


def test_unsigned_commit_on_a_gpg_verified_file_remote_is_refused(
        device: tuple[Path, Repo], tmp_path: Path, trusted_gpg_key: bytes) -> None:
    s, src = device
    _set_remote(s, gpg_verify="true")
    repo_path = sr.Sysroot.open(s).repo_path
    gpg.import_to_keyring(repo_path / "origin.trustedkeys.gpg", trusted_gpg_key)
    v2 = commit_tiny(src, tmp_path, "2")
    before = _state(s)
    rc, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc != 0 and "not GPG-signed" in err and "Traceback" not in err, err
    assert _state(s) == before
    assert not sr.Sysroot.open(s).repo.has_object(v2, ObjectType.COMMIT)


def test_file_remote_with_sign_verify_takes_only_commits_signed_by_the_trusted_key(
        device: tuple[Path, Repo], tmp_path: Path) -> None:
    s, src = device
    secret, public = sign.ed25519_generate()
    other_secret, _other_public = sign.ed25519_generate()
    _set_remote(s, sign_verify="true", verification_ed25519_key=public)
    v2 = commit_tiny(src, tmp_path, "2")
    assert main(["repo", "sign", "--repo", str(src.path), "testos/stable", other_secret]) == 0
    before = _state(s)
    rc, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc != 0 and "Traceback" not in err and "signature" in err.lower(), err
    assert _state(s) == before
    assert not sr.Sysroot.open(s).repo.has_object(v2, ObjectType.COMMIT)
    assert main(["repo", "sign", "--repo", str(src.path), "testos/stable", secret]) == 0
    rc, err = _cli("device", "upgrade", "--sysroot", str(s))
    assert rc == 0, err
    assert sr.Sysroot.open(s).deployments()[0].csum == v2
