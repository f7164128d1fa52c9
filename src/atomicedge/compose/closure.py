"""The device closure: exactly the modules of atomicedge that a device runs, and their hash.

Edge images ship the device agent (``atomicedge device``, the health service, the Quadlet
generator, the local ``atomicedge repo`` verbs) and nothing of the builder, the publisher or
the lab. The set is computed from the code, not listed by hand: start at :data:`ROOTS` and
follow every ``atomicedge`` import (module level or inside functions), stopping at the
host-only packages of :data:`HOST_ONLY`. An import of a host-only package inside a shipped
module is allowed only inside a function of the CLI (a host verb such as ``device boot``; on
a device it fails with a clear "not available on this system"); anywhere else it is an error,
because the device would crash on it.

The closure runs on the image's Debian ``python3``: its third-party imports must be Debian
packages of the edge base (:data:`DEBIAN_MODULES`), checked here as well.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path

import atomicedge
from atomicedge.errors import UsageError

PACKAGE_DIR = Path(atomicedge.__file__).resolve().parent
# what a device runs: its CLI verbs, the agent and health service, the Quadlet generator, the
# network client (pull, delta pull) and delta application
ROOTS = ("atomicedge.cli.main", "atomicedge.cli.device", "atomicedge.cli.repo",
         "atomicedge.cli.quadlet", "atomicedge.device", "atomicedge.health",
         "atomicedge.workload", "atomicedge.remote", "atomicedge.delta.apply")
HOST_ONLY = ("atomicedge.compose", "atomicedge.publish", "atomicedge.lab",
             "atomicedge.composer", "atomicedge.cli.compose", "atomicedge.cli.composer",
             "atomicedge.cli.demo", "atomicedge.cli.lab", "atomicedge.cli.repo_net",
             "atomicedge.cli.vm", "atomicedge.delta.generate")
# third-party import name -> the Debian package the edge base installs for it
DEBIAN_MODULES = {"rich": "python3-rich", "urllib3": "python3-urllib3", "nacl": "python3-nacl"}
# optional accelerators: imported under try/except ImportError, absent on devices
OPTIONAL_MODULES = ("isal", "bsdiff4")


@dataclass(frozen=True)
class Closure:
    modules: tuple[str, ...]          # dotted names, sorted
    files: tuple[Path, ...]           # paths relative to the package's parent dir

    def digest(self) -> str:
        h = hashlib.sha256()
        for rel in self.files:
            h.update(str(rel).encode() + b"\0")
            h.update((PACKAGE_DIR.parent / rel).read_bytes() + b"\0")
        return h.hexdigest()


def _path_of(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (PACKAGE_DIR.parent / rel / "__init__.py", PACKAGE_DIR.parent / f"{rel}.py"):
        if cand.is_file():
            return cand
    return None


def _is_host_only(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HOST_ONLY)


def _imports(path: Path, module: str) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import in ``path``."""
    tree = ast.parse(path.read_bytes(), str(path))
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, inner, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = module.split(".")[: len(module.split(".")) - child.level + is_pkg]
                    base = ".".join([*parts, base] if base else parts)
                found.append((base, inner, child.lineno))
                found.extend((f"{base}.{a.name}", inner, child.lineno) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def _check_third_party(name: str, module: str, line: int, problems: list[str]) -> None:
    top = name.split(".")[0]
    if top in DEBIAN_MODULES or top in OPTIONAL_MODULES or top == "atomicedge":
        return
    import sys
    if top in sys.stdlib_module_names:
        return
    problems.append(f"{module}:{line} imports {name!r}, which is neither the standard "
                    "library nor a Debian package of the edge base")


def _expand_roots() -> list[str]:
    out = []
    for root in ROOTS:
        path = _path_of(root)
        if path is None:
            continue
        out.append(root)
        if path.name == "__init__.py":
            out += [f"{root}.{p.stem}" for p in sorted(path.parent.glob("*.py"))
                    if p.name != "__init__.py"]
    return out


def compute() -> Closure:
    """Walk the imports from :data:`ROOTS`; raise UsageError naming every unshippable import."""
    seen: set[str] = set()
    todo = _expand_roots()
    problems: list[str] = []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _path_of(module)
        if path is None:
            continue  # ``from pkg import name`` where name is not a module
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for name, nested, line in _imports(path, module):
            if not name.startswith("atomicedge"):
                _check_third_party(name, module, line, problems)
            elif _is_host_only(name):
                if not (nested and module.startswith("atomicedge.cli.")):
                    problems.append(f"{module}:{line} imports host-only {name}")
            else:
                todo.append(name)
    if problems:
        raise UsageError("the device closure cannot be shipped: " + "; ".join(sorted(problems)),
                         "device code must not import the builder, publisher or lab")
    files = sorted(_path_of(m).relative_to(PACKAGE_DIR.parent) for m in seen)  # type: ignore[union-attr]
    return Closure(tuple(sorted(seen)), tuple(files))


DATA_DIRS = ("device/units", "workload/files")


def units_digest() -> str:
    """The units, timers, generators and defaults the image gets (:data:`DATA_DIRS`)."""
    h = hashlib.sha256()
    for d in DATA_DIRS:
        for p in sorted((PACKAGE_DIR / d).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(f"{d}/{p.relative_to(PACKAGE_DIR / d)}".encode() + b"\0")
                h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


SITE_DIR = Path("usr/lib/python3/dist-packages")


def install(tree: Path, closure: Closure | None = None) -> Closure:
    """Copy the closure into ``tree``'s Debian site-packages and byte-compile it there.

    The ``.pyc`` files are made by the image's own python3 (its magic number) with unchecked
    hashes: an OSTree checkout sets every mtime to 0 and ``/usr`` is read-only, so
    timestamp-checked caches would be stale on every device and never rewritten."""
    from atomicedge import runner

    closure = closure or compute()
    site = tree / SITE_DIR
    dest_pkg = site / "atomicedge"
    if dest_pkg.exists():
        import shutil
        shutil.rmtree(dest_pkg)
    for rel in closure.files:
        dest = site / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((PACKAGE_DIR.parent / rel).read_bytes())
        dest.chmod(0o644)
    python = tree / "usr" / "bin" / "python3"
    if python.exists():
        runner.run(["chroot", str(tree), "/usr/bin/python3", "-m", "compileall", "-q",
                    "--invalidation-mode", "unchecked-hash", f"/{SITE_DIR}/atomicedge"],
                   what="byte-compiling the device closure with the image's python3")
    return closure
