"""Signatures: GPG through the gpg binary, ed25519 (ostree.sign.ed25519), key rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from net_helpers import StaticServer, ostree_client, ostree_commit, ostree_fsck, run, stop_gpg_agent

from atomicedge.cli.main import main
from atomicedge.errors import CorruptionError
from atomicedge.ostree.commit import commit_directory
from atomicedge.ostree.repo import Repo
from atomicedge.publish import summary as pubsum
from atomicedge.publish.serve import Server
from atomicedge.remote import config as remotes
from atomicedge.remote.pull import pull
from atomicedge.trust import gpg, sign


@pytest.fixture(scope="module")
def other_gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("gnupg-other")
    yield home, gpg.generate_test_key(home, "intruder")
    stop_gpg_agent(home)


def _no_objects(repo: Repo) -> bool:
    return not any(repo.iter_objects())


def test_ostree_with_gpg_verify_pulls_our_signed_commit(tmp_path: Path,
                                                        src_repo: tuple[Repo, str],
                                                        gpg_keys: tuple[Path, str, Path]
                                                        ) -> None:
    repo, csum = src_repo
    home, key, pub = gpg_keys
    assert main(["repo", "gpg-sign", "--repo", str(repo.path), "--gpg-homedir", str(home),
                 "main", key]) == 0
    with Server(repo.path) as srv:
        client = ostree_client(tmp_path / "client", srv.url, "--set=gpg-verify=true",
                               f"--gpg-import={pub}")
        run("ostree", f"--repo={client}", "pull", "origin", "main")
    ostree_fsck(client)
    out = run("ostree", f"--repo={client}", "show", "--gpg-verify-remote=origin", csum).stdout
    assert "Good signature" in out


def test_we_verify_a_signature_made_by_ostree_gpg_sign(tmp_path: Path, tree: Path,
                                                       gpg_keys: tuple[Path, str, Path]) -> None:
    home, key, pub = gpg_keys
    src = tmp_path / "ostree-src"
    run("ostree", "init", f"--repo={src}", "--mode=archive")
    csum = ostree_commit(src, tree)
    run("ostree", f"--repo={src}", "gpg-sign", f"--gpg-homedir={home}", csum, key)
    dst = Repo.init(tmp_path / "dst", "bare-user")
    remotes.add(dst, "origin", f"file://{src}", gpg_verify=True)
    assert main(["repo", "remote", "gpg-import", "--repo", str(dst.path), "origin", "-k",
                 str(pub)]) == 0
    pull(Repo.open(dst.path), "origin", ["main"])
    assert dst.read_ref("origin:main") == csum
    ostree_fsck(dst.path)


def test_unsigned_commit_is_refused_and_nothing_is_stored(tmp_path: Path,
                                                          src_repo: tuple[Repo, str],
                                                          gpg_keys: tuple[Path, str, Path]
                                                          ) -> None:
    repo, _csum = src_repo
    dst = Repo.init(tmp_path / "dst", "bare-user")
    remotes.add(dst, "origin", f"file://{repo.path}", gpg_verify=True)
    gpg.import_to_keyring(dst.path / "origin.trustedkeys.gpg", gpg_keys[2].read_bytes())
    with pytest.raises(CorruptionError, match="not GPG-signed"):
        pull(dst, "origin", ["main"])
    assert _no_objects(dst) and dst.read_ref("origin:main") is None


def test_commit_signed_by_an_untrusted_key_is_refused(tmp_path: Path, src_repo: tuple[Repo, str],
                                                      gpg_keys: tuple[Path, str, Path],
                                                      other_gpg_key: tuple[Path, str]) -> None:
    repo, _csum = src_repo
    assert main(["repo", "gpg-sign", "--repo", str(repo.path), "--gpg-homedir",
                 str(other_gpg_key[0]), "main", other_gpg_key[1]]) == 0
    dst = Repo.init(tmp_path / "dst", "bare-user")
    remotes.add(dst, "origin", f"file://{repo.path}", gpg_verify=True)
    gpg.import_to_keyring(dst.path / "origin.trustedkeys.gpg", gpg_keys[2].read_bytes())
    with pytest.raises(CorruptionError, match="no valid GPG signature"):
        pull(dst, "origin", ["main"])
    assert _no_objects(dst)


def test_tampered_signed_commit_is_refused(tmp_path: Path, tree: Path) -> None:
    """A commit re-written by an attacker (new id) keeps the old signature: refused."""
    secret, public = sign.ed25519_generate()
    repo = Repo.init(tmp_path / "src", "archive")
    good = commit_directory(repo, tree, branch="main", subject="good")
    assert main(["repo", "sign", "--repo", str(repo.path), "main", secret]) == 0
    evil = commit_directory(repo, tree, branch="main", subject="evil", parent="none")
    repo.write_detached_metadata(evil, repo.read_detached_metadata(good))
    dst = Repo.init(tmp_path / "dst", "bare-user")
    remotes.add(dst, "origin", f"file://{repo.path}", gpg_verify=False, sign_verify=True,
                options={"verification-ed25519-key": public})
    with pytest.raises(CorruptionError, match="no valid ed25519 signature"):
        pull(dst, "origin", ["main"])
    assert _no_objects(dst)


def test_ed25519_with_two_trusted_keys_accepts_either(tmp_path: Path,
                                                      src_repo: tuple[Repo, str]) -> None:
    repo, csum = src_repo
    old_secret, old_public = sign.ed25519_generate()
    _new_secret, new_public = sign.ed25519_generate()
    assert main(["repo", "sign", "--repo", str(repo.path), "main", old_secret]) == 0
    keyfile = tmp_path / "trusted.ed25519"
    keyfile.write_text(f"{new_public}\n{old_public}\n")
    dst = Repo.init(tmp_path / "dst", "bare-user")
    assert main(["repo", "remote", "add", "--repo", str(dst.path), "--no-gpg-verify",
                 f"--sign-verify=ed25519=file:{keyfile}", "origin",
                 f"file://{repo.path}"]) == 0
    dst = Repo.open(dst.path)  # the CLI changed its config
    pull(dst, "origin", ["main"])
    assert dst.read_ref("origin:main") == csum
    assert main(["repo", "sign", "--repo", str(dst.path), "--verify", csum, old_public]) == 0
    assert main(["repo", "sign", "--repo", str(dst.path), "--verify", csum, new_public]) == 1


def test_signed_summary_is_verified_and_a_tampered_one_refused(tmp_path: Path,
                                                               src_repo: tuple[Repo, str]
                                                               ) -> None:
    repo, _csum = src_repo
    secret, public = sign.ed25519_generate()
    pubsum.update(repo, sign_opts=pubsum.SignOptions(ed25519_secrets=[secret]))
    assert main(["repo", "sign", "--repo", str(repo.path), "main", secret]) == 0
    dst = Repo.init(tmp_path / "dst", "bare-user")
    remotes.add(dst, "origin", f"file://{repo.path}", gpg_verify=False, sign_verify=True,
                options={"verification-ed25519-key": public, "sign-verify-summary": "true"})
    pull(dst, "origin", ["main"])
    data = bytearray((repo.path / "summary").read_bytes())
    data[-3] ^= 1
    (repo.path / "summary").write_bytes(bytes(data))
    dst2 = Repo.init(tmp_path / "dst2", "bare-user")
    remotes.add(dst2, "origin", f"file://{repo.path}", gpg_verify=False, sign_verify=True,
                options={"verification-ed25519-key": public, "sign-verify-summary": "true"})
    with pytest.raises(CorruptionError, match="summary"):
        pull(dst2, "origin", ["main"])
    assert _no_objects(dst2)


def test_gpg_signed_summary_read_by_ostree(tmp_path: Path, src_repo: tuple[Repo, str],
                                           gpg_keys: tuple[Path, str, Path]) -> None:
    repo, _csum = src_repo
    home, key, pub = gpg_keys
    assert main(["repo", "summary", "-u", "--repo", str(repo.path), "--gpg-sign", key,
                 "--gpg-homedir", str(home)]) == 0
    assert main(["repo", "gpg-sign", "--repo", str(repo.path), "--gpg-homedir", str(home),
                 "main", key]) == 0
    with StaticServer(repo.path) as srv:
        client = ostree_client(tmp_path / "client", srv.url, "--set=gpg-verify=true",
                               "--set=gpg-verify-summary=true", f"--gpg-import={pub}")
        run("ostree", f"--repo={client}", "pull", "origin", "main")
    ostree_fsck(client)
    # the client (not the source) now holds the signed commit, verified by real ostree
    assert run("ostree", f"--repo={client}", "rev-parse", "origin:main").stdout.strip() == _csum
    shown = run("ostree", f"--repo={client}", "show", "--gpg-verify-remote=origin", _csum)
    assert "Good signature" in shown.stdout + shown.stderr, shown.stdout + shown.stderr


def test_summary_signature_is_required_even_when_commits_are_not_verified(
        tmp_path: Path, src_repo: tuple[Repo, str], gpg_keys: tuple[Path, str, Path]) -> None:
    """``gpg-verify-summary`` is its own switch (as in ostree), not a refinement of
    ``gpg-verify``: an unsigned summary is refused although commits need no signature."""
    repo, _csum = src_repo
    pubsum.update(repo)
    dst = Repo.init(tmp_path / "d", "bare-user")
    with Server(repo.path) as srv:
        remotes.add(dst, "origin", srv.url, gpg_verify=False)
        dst.config.set('remote "origin"', "gpg-verify-summary", "true")
        dst.write_config()
        gpg.import_to_keyring(dst.path / "origin.trustedkeys.gpg", gpg_keys[2].read_bytes())
        with pytest.raises(CorruptionError, match="summary is not GPG-signed"):
            pull(Repo.open(dst.path), "origin", ["main"])
    assert _no_objects(dst)
