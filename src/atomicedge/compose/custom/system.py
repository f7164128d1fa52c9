"""Hostname, time zone, NTP servers, locale, keyboard and kernel arguments.

These are plain configuration files, written directly (no tool adds anything here):
/etc/hostname, /etc/localtime -> /usr/share/zoneinfo/<zone> plus /etc/timezone, a
systemd-timesyncd drop-in for NTP servers, /etc/default/locale (+ /etc/locale.gen and
``locale-gen`` in the tree when the ``locales`` package is there), /etc/vconsole.conf for the
keyboard. Kernel arguments are recorded in /usr/lib/atomicedge/kargs (one line) and in the
commit metadata ``atomicedge.kargs`` so the deploy step puts them on the boot entries.
"""

from __future__ import annotations

import os
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.blueprint import Customizations
from atomicedge.errors import UsageError

KARGS = "usr/lib/atomicedge/kargs"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _timezone(tree: Path, zone: str) -> None:
    if not (tree / "usr/share/zoneinfo" / zone).exists():
        raise UsageError(f"time zone {zone!r} is not in the image's /usr/share/zoneinfo",
                         "add the tzdata package or check the zone name")
    link = tree / "etc/localtime"
    link.unlink(missing_ok=True)
    link.symlink_to(f"/usr/share/zoneinfo/{zone}")
    _write(tree / "etc/timezone", zone + "\n")


def _locale(tree: Path, languages: tuple[str, ...]) -> None:
    _write(tree / "etc/default/locale", f"LANG={languages[0]}\n")
    gen = tree / "usr/sbin/locale-gen"
    if gen.exists():
        _write(tree / "etc/locale.gen",
               "".join(f"{lang} {lang.split('.')[-1] if '.' in lang else 'UTF-8'}\n"
                       for lang in languages))
        tool.run(["chroot", str(tree), "/usr/sbin/locale-gen"], what="locale-gen",
                 env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def apply(tree: Path, cust: Customizations) -> None:
    if cust.hostname:
        _write(tree / "etc/hostname", cust.hostname + "\n")
    if cust.timezone:
        _timezone(tree, cust.timezone)
    if cust.ntpservers:
        _write(tree / "etc/systemd/timesyncd.conf.d/atomicedge.conf",
               "[Time]\nNTP=" + " ".join(cust.ntpservers) + "\n")
    if cust.languages:
        _locale(tree, cust.languages)
    if cust.keyboard:
        _write(tree / "etc/vconsole.conf", f"KEYMAP={cust.keyboard}\n")
    if cust.kernel_append:
        _write(tree / KARGS, cust.kernel_append.strip() + "\n")
