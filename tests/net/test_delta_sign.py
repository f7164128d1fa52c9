"""Signed static deltas (ostree's ``OSTSGNDT`` superblock, ed25519): real ostree reads our
signed superblocks; verify, apply-offline and pulls check them before using a byte.

Debian's ostree is built without ed25519 ("Requested signature type is not
implemented"), so it can judge the format (``static-delta show`` says ``Signed: yes``)
but not the signature itself; that side is checked against pynacl and tampering."""

from __future__ import annotations

from pathlib import Path

import pytest
from net_helpers import run

from atomicedge.cli.main import main
from atomicedge.delta import format as df
from atomicedge.delta import generate as delta
from atomicedge.errors import CorruptionError, UsageError
from atomicedge.ostree.objects import ObjectType
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import pull
from atomicedge.trust import sign


def _superblock(repo: Repo, v1: str | None, v2: str) -> Path:
    return repo.path / df.delta_relpath(v1, v2) / "superblock"


def test_signed_delta_is_read_by_ostree_and_verified_with_rotating_keys(
        two_commits: tuple[Repo, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    repo, v1, v2 = two_commits
    (old_sec, old_pub), (new_sec, new_pub) = sign.ed25519_generate(), sign.ed25519_generate()
    _other_sec, other_pub = sign.ed25519_generate()
    r = str(repo.path)
    assert main(["repo", "static-delta", "generate", "--repo", r, "--from", v1, "--to", v2,
                 "--sign", old_sec, "--sign", new_sec]) == 0
    name = df.delta_name(v1, v2)
    out = run("ostree", f"--repo={r}", "static-delta", "show", name).stdout
    assert "Signed: yes" in out and f"To: {v2}" in out
    for pub in (old_pub, new_pub):
        assert main(["repo", "static-delta", "verify", "--repo", r, name, pub]) == 0
    capsys.readouterr()
    assert main(["repo", "static-delta", "verify", "--repo", r, name, other_pub]) == 1
    assert "no valid ed25519 signature" in capsys.readouterr().err


def test_unsigned_delta_fails_verification(two_commits: tuple[Repo, str, str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo, v1, v2 = two_commits
    res = delta.generate(repo, v1, v2)
    _sec, pub = sign.ed25519_generate()
    assert main(["repo", "static-delta", "verify", "--repo", str(repo.path), res.name,
                 pub]) == 1
    assert "is not signed" in capsys.readouterr().err


def test_apply_offline_checks_the_signature_before_writing(
        tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    """A delta on a USB stick: with keys (or core.sign-verify-deltas) a tampered or unsigned
    superblock is refused and nothing of it is written."""
    repo, v1, v2 = two_commits
    secret, public = sign.ed25519_generate()
    delta.generate(repo, v1, v2, sign_secrets=[secret])
    dst = Repo.init(tmp_path / "dst", "archive")
    pull(dst, f"file://{repo.path}", [f"main@{v1}"], disable_static_deltas=True)
    before = set(dst.iter_objects())
    sb = _superblock(repo, v1, v2)
    good = sb.read_bytes()
    inner, sigs = df.unwrap_signed(good)
    forged = bytearray(inner)
    forged[-5] ^= 1  # inside the plain superblock the signature covers
    sb.write_bytes(df.wrap_signed(bytes(forged), sigs or {}))
    with pytest.raises(CorruptionError, match="no valid ed25519 signature"):
        delta.apply_offline(dst, sb, [public])
    assert set(dst.iter_objects()) == before
    dst.config.set("core", "sign-verify-deltas", "true")
    dst.write_config()
    dst = Repo.open(dst.path)
    sb.write_bytes(good)
    with pytest.raises(UsageError, match="no trusted key"):
        delta.apply_offline(dst, sb)
    assert delta.apply_offline(dst, sb, [public]) == v2
    assert dst.has_object(v2, ObjectType.COMMIT)


def test_pull_from_a_sign_verify_remote_skips_a_badly_signed_delta(
        tmp_path: Path, two_commits: tuple[Repo, str, str]) -> None:
    """The commit's own signature still decides; a delta signed by someone else is not
    used (objects are pulled instead), and with --require-static-deltas the pull fails."""
    repo, v1, v2 = two_commits
    secret, public = sign.ed25519_generate()
    intruder, _pub = sign.ed25519_generate()
    for c in (v1, v2):
        assert main(["repo", "sign", "--repo", str(repo.path), c, secret]) == 0
    results = {}
    with Server(repo.path) as srv:
        for label, key in (("trusted", secret), ("intruder", intruder)):
            delta.generate(repo, v1, v2, sign_secrets=[key])
            pubsum.update(repo)
            dst = Repo.init(tmp_path / label, "bare-user")
            remotes.add(dst, "origin", srv.url, gpg_verify=False, sign_verify=True,
                        options={"verification-ed25519-key": public})
            dst = Repo.open(dst.path)
            pull(dst, "origin", [f"main@{v1}"])
            results[label] = pull(dst, "origin", ["main"]).stats.deltas
            assert dst.read_ref("origin:main") == v2
            if label == "intruder":
                with pytest.raises(CorruptionError, match="no valid ed25519 signature"):
                    fresh = Repo.init(tmp_path / "required", "bare-user")
                    remotes.add(fresh, "origin", srv.url, gpg_verify=False, sign_verify=True,
                                options={"verification-ed25519-key": public})
                    fresh = Repo.open(fresh.path)
                    pull(fresh, "origin", [f"main@{v1}"])
                    pull(fresh, "origin", ["main"], require_static_deltas=True)
    assert results == {"trusted": [df.delta_name(v1, v2)], "intruder": []}
