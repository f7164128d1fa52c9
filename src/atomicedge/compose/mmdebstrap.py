"""mmdebstrap seam: install a resolved package set into an empty directory (root mode).

Why mmdebstrap: it installs real Debian packages with their maintainer scripts, needs no
network namespace tricks, and builds a minbase tree in ~13 s. The two gotchas of the machine
notes are handled here: a local ``file://`` repository needs the file-mirror-automount hook, and
a failed run can leave that hook's read-only bind mount inside the target, which is unmounted
before the half tree is deleted (the caller only ever sees a complete tree or none).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from atomicedge import runner as tool
from atomicedge.compose.apt import AptState

AUTOMOUNT_HOOKS = Path("/usr/share/mmdebstrap/hooks/file-mirror-automount")
# a whole image build (download, unpack, configure) on a busy 2-core machine: well above it
MMDEBSTRAP_TIMEOUT = 3600.0
# dracut must build a generic initramfs (the build host is not the device); Debian's
# ostree-boot adds its 98ostree module through /etc/dracut.conf.d/ostree.conf
DRACUT_CONF = 'hostonly="no"\nhostonly_cmdline="no"\n'


INITRAMFS_HOOK = (
    'for k in "$1"/boot/vmlinuz-*; do [ -e "$k" ] || continue; v="${k##*/vmlinuz-}"; '
    'if [ -x "$1/usr/bin/dracut" ]; then chroot "$1" env -u INITRD dracut -q --force '
    '"/boot/initrd.img-$v" "$v"; fi; done')


def drop_backups(target: Path) -> None:
    """Delete dpkg's ``*-old`` backups (status-old: the status before dpkg's last write). They
    record build history, not the installed system — an incremental build's differ from a clean
    one's — and nothing on a device reads them; dpkg writes a new one on its next change."""
    for backup in (target / "var/lib/dpkg").glob("*-old"):
        backup.unlink()


def unmount_below(target: Path) -> None:
    """Lazily unmount everything mounted at or below ``target`` (deepest first)."""
    prefix = str(target.resolve())
    mounts = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        tool.run(["umount", "-l", point], what=f"umount {point}", check=False)


def remove_tree(target: Path) -> None:
    if target.exists():
        unmount_below(target)
        shutil.rmtree(target, ignore_errors=True)


def build_tree(state: AptState, suite: str, includes: list[str], target: Path) -> None:
    """Run mmdebstrap --variant=minbase into ``target`` (must not exist); clean up on failure."""
    src_file = state.dir / "etc/sources.list.d" / state.sources.name
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
            f"--architectures={state.arch}",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--essential-hook=mkdir -p \"$1/etc/dracut.conf.d\" && printf '%s' "
            f"'{DRACUT_CONF}' > \"$1/etc/dracut.conf.d/10-atomicedge.conf\""]
    if includes:
        argv.append("--include=" + ",".join(includes))
    # the kernel's and dracut's maintainer scripts would each build the initramfs (~2 min
    # apiece here); INITRD=No skips both and one generic build runs at the end instead
    argv.append(f"--customize-hook={INITRAMFS_HOOK}")
    if state.sources.offline_dir is not None:
        argv.append(f"--hook-dir={AUTOMOUNT_HOOKS}")
    argv += [suite, str(target), str(src_file)]
    try:
        tool.run(argv, what="mmdebstrap", env={**os.environ, "INITRD": "No"},
                 hint="see the apt error above; --verbose shows the command",
                 timeout=MMDEBSTRAP_TIMEOUT)
    except BaseException:
        remove_tree(target)
        raise
    unmount_below(target)
    drop_backups(target)
