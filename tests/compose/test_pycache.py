"""The image's python bytecode stays usable on a device (compose/ostreeprep.py step 8).

A deployment gives every file mtime 0 and a read-only /usr: Debian's timestamp-checked ``.pyc``
files would then be stale forever and python3 would compile every module again on each start.
Here a module is byte-compiled the way Debian's postinst does (py_compile, timestamp mode), its
source then gets mtime 0 as in a deployment, and the real python3 with ``-v`` shows whether the
cache is used. Cheap: one tiny tree, no compose.
"""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

from atomicedge.compose import ostreeprep


def _uses_cache(site: Path) -> bool:
    proc = subprocess.run([sys.executable, "-v", "-c", "import edgemod"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(site),
                                          "PYTHONDONTWRITEBYTECODE": "1"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return f"# code object from '{site}/__pycache__/edgemod." in proc.stderr


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    site = tmp_path / "usr/lib/python3/dist-packages"
    site.mkdir(parents=True)
    src = site / "edgemod.py"
    src.write_text("VALUE = 42\n")
    pyc = Path(py_compile.compile(str(src), doraise=True))
    return site, src, pyc


def test_timestamp_caches_become_unchecked_and_are_used_with_mtime_zero(tmp_path: Path) -> None:
    site, src, pyc = _tree(tmp_path)
    cached = tmp_path / "cache-copy.pyc"
    os.link(pyc, cached)                              # the package cache shares the inode
    built = src.stat().st_mtime_ns
    os.utime(src, (0, 0))
    assert not _uses_cache(site)                      # what a device did before: recompile
    os.utime(src, ns=(built, built))                  # back in the compose's tree
    assert ostreeprep.pycache(tmp_path) == 1
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == ostreeprep.PYC_UNCHECKED_HASH
    assert int.from_bytes(cached.read_bytes()[4:8], "little") == 0   # cache untouched
    os.utime(src, (0, 0))                             # as deployed
    assert _uses_cache(site)


def test_stale_caches_and_links_out_of_the_tree_are_left_alone(tmp_path: Path) -> None:
    site, src, pyc = _tree(tmp_path)
    src.write_text("VALUE = 43  # edited after compiling\n")
    outside = tmp_path / "host"
    _s, _src2, host_pyc = _tree(outside)
    (site / "linked").symlink_to(host_pyc.parent.parent, target_is_directory=True)
    before = host_pyc.read_bytes()
    assert ostreeprep.pycache(tmp_path) == 0
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0
    assert host_pyc.read_bytes() == before
