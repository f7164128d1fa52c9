"""``atomicedge repo`` verbs for repositories over the network.

summary, remote, pull, static-delta, gpg-sign, sign, promote, serve — with ostree's verb and
flag names so scripts port by replacing ``ostree`` with ``atomicedge repo``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atomicedge.errors import NotFoundError, UsageError
from atomicedge.ostree.repo import Repo

Sub = argparse._SubParsersAction


def _repo_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, metavar="PATH", type=Path,
                   help="repository directory")


def _sign_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpg-sign", action="append", default=[], metavar="KEYID",
                   help="GPG-sign with this key (repeatable)")
    p.add_argument("--gpg-homedir", type=Path, help="GnuPG home holding the secret keys")
    p.add_argument("--sign", action="append", default=[], metavar="SECRET",
                   help="ed25519 secret key, base64 (repeatable)")
    p.add_argument("--sign-type", default="ed25519", choices=["ed25519"])
    p.add_argument("--keys-file", type=Path,
                   help="file with one ed25519 secret key (base64) per line")


def _sign_opts(args: argparse.Namespace) -> Any:
    from atomicedge.publish.summary import SignOptions
    secrets = list(args.sign)
    if args.keys_file is not None:
        secrets += _read_keys(args.keys_file)
    return SignOptions(gpg_key_ids=list(args.gpg_sign), gpg_homedir=args.gpg_homedir,
                       ed25519_secrets=secrets)


def _read_keys(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise NotFoundError(f"--keys-file {path}: {exc.strerror}") from None


def register_repo_verbs(sub: Sub) -> None:
    _register_summary(sub)
    _register_remote(sub)
    _register_pull(sub)
    _register_delta(sub)
    _register_signing(sub)
    p = sub.add_parser("promote", help="mirror a stage repo into production, delta, summary")
    _repo_arg_optional(p)
    p.add_argument("--from", dest="source", required=True, metavar="REMOTE_OR_URL")
    p.add_argument("--to", dest="dest", type=Path, metavar="PATH",
                   help="production repository (default: --repo)")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("--no-delta", action="store_true", help="skip static delta generation")
    _sign_args(p)
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("serve", help="serve a repository over HTTP (with /stats)")
    _repo_arg(p)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_serve)


def _repo_arg_optional(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, metavar="PATH", help="repository directory")


# -- summary ------------------------------------------------------------------------------


def _register_summary(sub: Sub) -> None:
    p = sub.add_parser("summary", help="update or view the repository summary")
    _repo_arg(p)
    p.add_argument("-u", "--update", action="store_true", help="regenerate summary")
    p.add_argument("--view", action="store_true", help="print the summary")
    p.add_argument("--raw", action="store_true", help="with --view: JSON instead of text")
    p.add_argument("-m", "--add-metadata", action="append", default=[], metavar="KEY=VALUE")
    _sign_args(p)
    p.set_defaults(func=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    from atomicedge.ostree import summary as sm
    from atomicedge.ostree.commit import parse_metadata_strings
    from atomicedge.publish import summary as pubsum
    repo = Repo.open(args.repo)
    if not args.update and not args.view:
        raise UsageError("summary needs -u/--update or --view")
    if args.update:
        s = pubsum.update(repo, sign_opts=_sign_opts(args),
                      extra=parse_metadata_strings(args.add_metadata, "--add-metadata"))
    else:
        s = sm.load(repo)
    if args.view:
        if args.raw:
            print(json.dumps({"refs": {r.name: {"commit": r.commit, "size": r.size,
                                                "timestamp": r.timestamp,
                                                "version": r.version} for r in s.refs},
                              "deltas": s.deltas}, indent=2))
        else:
            sys.stdout.write(sm.view(s))
    return 0


# -- remote -------------------------------------------------------------------------------


def _register_remote(sub: Sub) -> None:
    p = sub.add_parser("remote", help="manage remotes (ostree-compatible config)")
    rs = p.add_subparsers(dest="remote_verb", metavar="VERB", required=True)
    a = rs.add_parser("add", help="add a remote")
    _repo_arg(a)
    a.add_argument("name")
    a.add_argument("url")
    a.add_argument("branches", nargs="*")
    a.add_argument("--no-gpg-verify", action="store_true")
    a.add_argument("--sign-verify", action="append", default=[], metavar="TYPE=KEY",
                   help="e.g. ed25519=inline:BASE64 or ed25519=file:PATH")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--if-not-exists", action="store_true")
    a.add_argument("--gpg-import", type=Path, metavar="FILE", help="trusted GPG keys")
    a.set_defaults(func=cmd_remote_add)
    d = rs.add_parser("delete", help="delete a remote")
    _repo_arg(d)
    d.add_argument("name")
    d.add_argument("--if-exists", action="store_true")
    d.set_defaults(func=cmd_remote_delete)
    ls = rs.add_parser("list", help="list remotes")
    _repo_arg(ls)
    ls.add_argument("-u", "--show-urls", action="store_true")
    ls.set_defaults(func=cmd_remote_list)
    su = rs.add_parser("show-url", help="print a remote's URL")
    _repo_arg(su)
    su.add_argument("name")
    su.set_defaults(func=cmd_remote_show_url)
    gi = rs.add_parser("gpg-import", help="trust GPG public keys for a remote")
    _repo_arg(gi)
    gi.add_argument("name")
    gi.add_argument("-k", "--keyring", type=Path, action="append", default=[], required=True)
    gi.set_defaults(func=cmd_remote_gpg_import)


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        out[k] = v
    return out


def cmd_remote_add(args: argparse.Namespace) -> int:
    from atomicedge.remote import config as remotes
    repo = Repo.open(args.repo)
    opts = _parse_sets(args.set)
    for item in args.sign_verify:
        kind, _, spec = item.partition("=")
        if kind != "ed25519" or not spec:
            raise UsageError(f"--sign-verify {item!r}: expected ed25519=inline:KEY or "
                             "ed25519=file:PATH")
        src, _, value = spec.partition(":")
        if src == "inline":
            opts["verification-ed25519-key"] = value
        elif src == "file":
            opts["verification-ed25519-file"] = value
        else:
            raise UsageError(f"--sign-verify {item!r}: source must be inline: or file:")
    remotes.add(repo, args.name, args.url, gpg_verify=not args.no_gpg_verify,
                sign_verify=bool(args.sign_verify), branches=args.branches, options=opts,
                if_not_exists=args.if_not_exists)
    if args.gpg_import:
        _gpg_import(repo, args.name, [args.gpg_import])
    return 0


def _gpg_import(repo: Repo, name: str, files: list[Path]) -> None:
    from atomicedge.remote import config as remotes
    from atomicedge.trust import gpg
    remotes.get(repo, name)
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"key file {f}: {exc.strerror}") from None
        gpg.import_to_keyring(repo.path / f"{name}.trustedkeys.gpg", data)


def cmd_remote_gpg_import(args: argparse.Namespace) -> int:
    _gpg_import(Repo.open(args.repo), args.name, args.keyring)
    return 0


def cmd_remote_delete(args: argparse.Namespace) -> int:
    from atomicedge.remote import config as remotes
    remotes.delete(Repo.open(args.repo), args.name, if_exists=args.if_exists)
    return 0


def cmd_remote_list(args: argparse.Namespace) -> int:
    from atomicedge.remote import config as remotes
    repo = Repo.open(args.repo)
    for name in remotes.names(repo):
        if args.show_urls:
            print(f"{name}  {remotes.get(repo, name).url}")
        else:
            print(name)
    return 0


def cmd_remote_show_url(args: argparse.Namespace) -> int:
    from atomicedge.remote import config as remotes
    print(remotes.get(Repo.open(args.repo), args.name).url)
    return 0


# -- pull ---------------------------------------------------------------------------------


def _register_pull(sub: Sub) -> None:
    p = sub.add_parser("pull", help="pull refs from a remote (name or URL)")
    _repo_arg(p)
    p.add_argument("remote", metavar="REMOTE")
    p.add_argument("refs", nargs="*", metavar="REF[@CHECKSUM]")
    p.add_argument("--mirror", action="store_true")
    p.add_argument("--depth", type=int, default=0)
    p.add_argument("--commit-metadata-only", action="store_true")
    p.add_argument("--disable-static-deltas", action="store_true")
    p.add_argument("--require-static-deltas", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    from atomicedge.remote.pull import RichPullProgress, pull
    repo = Repo.open(args.repo)
    kwargs = dict(mirror=args.mirror, depth=args.depth,
                  commit_metadata_only=args.commit_metadata_only,
                  disable_static_deltas=args.disable_static_deltas,
                  require_static_deltas=args.require_static_deltas)
    if args.no_progress or args.json or not sys.stderr.isatty():
        res = pull(repo, args.remote, args.refs, **kwargs)
    else:
        from rich.console import Console
        with RichPullProgress(Console(stderr=True)) as bar:
            res = pull(repo, args.remote, args.refs, progress=bar, **kwargs)
    st = res.stats
    if args.json:
        print(json.dumps({"refs": res.refs, "metadata": st.metadata_fetched,
                          "content": st.content_fetched, "bytes": st.bytes,
                          "requests": st.requests, "deltas": st.deltas,
                          "seconds": round(st.seconds, 3)}))
    else:
        via = f" via {len(st.deltas)} static delta(s)" if st.deltas else ""
        print(f"{st.metadata_fetched} metadata, {st.content_fetched} content objects "
              f"fetched{via}; {st.bytes} bytes in {st.requests} requests, "
              f"{st.seconds:.2f} s")
    return 0


# -- static deltas ------------------------------------------------------------------------


def _register_delta(sub: Sub) -> None:
    p = sub.add_parser("static-delta", help="static deltas (ostree format)")
    ds = p.add_subparsers(dest="delta_verb", metavar="VERB", required=True)
    g = ds.add_parser("generate", help="generate a delta FROM -> TO")
    _repo_arg(g)
    g.add_argument("--from", dest="from_rev", metavar="REV", help="default: TO^")
    g.add_argument("--to", dest="to_rev", metavar="REV")
    g.add_argument("--empty", action="store_true", help="from-scratch delta")
    g.add_argument("--inline", action="store_true", help="embed parts in the superblock")
    g.add_argument("--min-fallback-size", type=int, default=4, metavar="MB")
    g.add_argument("--max-chunk-size", type=int, default=32, metavar="MB")
    g.add_argument("--disable-bsdiff", action="store_true")
    g.add_argument("--filename", type=Path, help="write a self-contained delta here")
    g.add_argument("--sign", action="append", default=[], metavar="SECRET",
                   help="sign the superblock with this ed25519 secret key (repeatable)")
    g.add_argument("--sign-type", default="ed25519", choices=["ed25519"])
    g.add_argument("--keys-file", type=Path,
                   help="file with one ed25519 secret key (base64) per line")
    g.add_argument("rev", nargs="?", help="TO (alternative to --to)")
    g.set_defaults(func=cmd_delta_generate)
    v = ds.add_parser("verify", help="check a delta's superblock signature")
    _repo_arg(v)
    v.add_argument("name")
    _trusted_keys_args(v)
    v.set_defaults(func=cmd_delta_verify)
    ls = ds.add_parser("list", help="list deltas")
    _repo_arg(ls)
    ls.set_defaults(func=cmd_delta_list)
    sh = ds.add_parser("show", help="describe a delta")
    _repo_arg(sh)
    sh.add_argument("name")
    sh.set_defaults(func=cmd_delta_show)
    ap = ds.add_parser("apply-offline", help="apply a delta from a superblock file")
    _repo_arg(ap)
    ap.add_argument("path", type=Path)
    _trusted_keys_args(ap)
    ap.set_defaults(func=cmd_delta_apply)
    de = ds.add_parser("delete", help="delete a delta")
    _repo_arg(de)
    de.add_argument("name")
    de.set_defaults(func=cmd_delta_delete)


def _trusted_keys_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="*", metavar="KEY", help="trusted ed25519 public keys")
    p.add_argument("--sign-type", default="ed25519", choices=["ed25519"])
    p.add_argument("--keys-file", type=Path, help="one ed25519 public key (base64) per line")


def _keys(args: argparse.Namespace) -> list[str]:
    return list(args.keys) + (_read_keys(args.keys_file) if args.keys_file else [])


def cmd_delta_verify(args: argparse.Namespace) -> int:
    from atomicedge.delta import generate as delta
    keys = _keys(args)
    if not keys:
        raise UsageError("no trusted keys given", "pass public keys or --keys-file")
    delta.verify(Repo.open(args.repo), args.name, keys)
    print(f"static delta {args.name}: valid ed25519 signature")
    return 0


def cmd_delta_generate(args: argparse.Namespace) -> int:
    from atomicedge.delta import generate as delta
    repo = Repo.open(args.repo)
    to_rev = args.to_rev or args.rev
    if not to_rev:
        raise UsageError("static-delta generate needs --to REV")
    to = repo.resolve_rev(to_rev)
    frm = None if args.empty else repo.resolve_rev(args.from_rev or f"{to}^")
    res = delta.generate(repo, frm, to, inline=args.inline,
                         min_fallback_size=args.min_fallback_size * 1_000_000,
                         max_chunk_size=max(args.max_chunk_size, 1) * 1_000_000,
                         bsdiff=not args.disable_bsdiff, filename=args.filename,
                         sign_secrets=list(args.sign) + (_read_keys(args.keys_file)
                                                         if args.keys_file else []))
    print(f"Generated static delta {res.name}: {res.parts} part(s), {res.total_size} bytes, "
          f"{res.fallbacks} fallback(s), bsdiff={res.bsdiff}")
    return 0


def cmd_delta_list(args: argparse.Namespace) -> int:
    from atomicedge.delta import format as df
    names = df.list_deltas(Repo.open(args.repo).path)
    if not names:
        print("(No static deltas)")
    for n in names:
        print(n)
    return 0


def cmd_delta_show(args: argparse.Namespace) -> int:
    from atomicedge.delta import generate as delta
    sys.stdout.write(delta.show(Repo.open(args.repo), args.name))
    return 0


def cmd_delta_apply(args: argparse.Namespace) -> int:
    from atomicedge.delta import generate as delta
    csum = delta.apply_offline(Repo.open(args.repo), args.path, _keys(args))
    print(f"applied delta to {csum}")
    return 0


def cmd_delta_delete(args: argparse.Namespace) -> int:
    from atomicedge.delta import generate as delta
    delta.delete(Repo.open(args.repo), args.name)
    return 0


# -- signing ------------------------------------------------------------------------------


def _register_signing(sub: Sub) -> None:
    g = sub.add_parser("gpg-sign", help="GPG-sign a commit")
    _repo_arg(g)
    g.add_argument("commit")
    g.add_argument("key_ids", nargs="+", metavar="KEYID")
    g.add_argument("--gpg-homedir", type=Path)
    g.set_defaults(func=cmd_gpg_sign)
    s = sub.add_parser("sign", help="ed25519-sign (or verify) a commit")
    _repo_arg(s)
    s.add_argument("commit")
    s.add_argument("keys", nargs="*", metavar="KEY", help="secret keys (public with --verify)")
    s.add_argument("--sign-type", default="ed25519", choices=["ed25519"])
    s.add_argument("--keys-file", type=Path)
    s.add_argument("--verify", action="store_true")
    s.set_defaults(func=cmd_sign)


def cmd_gpg_sign(args: argparse.Namespace) -> int:
    from atomicedge.ostree.objects import ObjectType
    from atomicedge.trust import gpg, sign
    repo = Repo.open(args.repo)
    csum = repo.resolve_rev(args.commit)
    data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
    meta = repo.read_detached_metadata(csum)
    for key_id in args.key_ids:
        meta = sign.add_signature(meta, sign.GPG_KEY,
                                  gpg.sign_detached(data, key_id, args.gpg_homedir))
    repo.write_detached_metadata(csum, meta)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from atomicedge.ostree.objects import ObjectType
    from atomicedge.trust import sign
    repo = Repo.open(args.repo)
    csum = repo.resolve_rev(args.commit)
    data = repo.read_metadata_bytes(csum, ObjectType.COMMIT)
    keys = _keys(args)
    if not keys:
        raise UsageError("no keys given", "pass keys as arguments or --keys-file")
    meta = repo.read_detached_metadata(csum)
    if args.verify:
        pol = sign.TrustPolicy(ed25519=True, ed25519_keys=keys)
        sign.verify(f"commit {csum}", data, meta, pol)
        print(f"commit {csum}: valid ed25519 signature")
        return 0
    for key in keys:
        meta = sign.add_signature(meta, sign.ED25519_KEY, sign.ed25519_sign(data, key))
    repo.write_detached_metadata(csum, meta)
    return 0


# -- promote / serve ----------------------------------------------------------------------


def cmd_promote(args: argparse.Namespace) -> int:
    from atomicedge.publish import promote
    dest = args.dest or args.repo
    if dest is None:
        raise UsageError("promote needs --to PATH (the production repository)")
    res = promote.promote(args.source, Path(dest), args.refs, sign_opts=_sign_opts(args),
                          make_delta=not args.no_delta)
    for ref, (old, new) in res.items():
        if old == new:
            print(f"{ref}: already at {new} (nothing to do)")
        else:
            print(f"{ref}: {old or '(none)'} -> {new}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from atomicedge.publish.serve import serve_forever
    serve_forever(args.repo, args.bind, args.port)
    return 0
