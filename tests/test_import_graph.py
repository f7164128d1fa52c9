"""No import cycle inside any subpackage: each module of a package imports only downward.

The graph is grimp's (the one import-linter checks the layers with): imports inside
functions and under ``if TYPE_CHECKING:`` count too, so a cycle cannot hide behind a lazy
import. The layers *between* packages are import-linter's contracts (``make lint``).
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ["ostree", "remote", "delta", "trust", "device", "health", "compose", "publish",
            "lab"]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("atomicedge", cache_dir=None,
                             exclude_type_checking_imports=False)


def cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The strongly connected components (more than one module, or a module importing
    itself) of the import graph restricted to ``package`` and its descendants."""
    mods = {package} | graph.find_descendants(package)
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in mods)
             for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(mods):
        if root in index:
            continue
        work = [(root, 0)]  # iterative Tarjan: (module, next edge to look at)
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if i < len(edges[v]):
                work.append((v, i + 1))
                w = edges[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in edges[v]:
                    found.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return found


def _explain(graph: grimp.ImportGraph, comp: list[str]) -> str:
    lines = []
    for a in comp:
        for b in comp:
            for d in graph.get_import_details(importer=a, imported=b):
                lines.append(f"  {a}:{d['line_number']} imports {b}")
    return "\n".join(lines)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_the_package(graph: grimp.ImportGraph, package: str) -> None:
    name = f"atomicedge.{package}"
    assert name in graph.modules, f"{name} is not a package of atomicedge any more"
    found = cycles(graph, name)
    assert not found, "import cycles:\n" + "\n\n".join(_explain(graph, c) for c in found)


def test_the_check_finds_a_cycle_hidden_in_a_function_or_type_checking_import() -> None:
    """The checker itself: a lazy import inside a function (as ``repo.transaction()`` had)
    and an ``if TYPE_CHECKING:`` import close a cycle, and it is reported."""
    g = grimp.ImportGraph()
    for m in ("p", "p.repo", "p.content", "p.transaction", "p.walk"):
        g.add_module(m)
    g.add_import(importer="p.transaction", imported="p.content", line_number=3,
                 line_contents="from p.content import write")
    g.add_import(importer="p.content", imported="p.repo", line_number=9,
                 line_contents="from p.repo import Repo  # TYPE_CHECKING")
    g.add_import(importer="p.walk", imported="p.repo", line_number=2,
                 line_contents="from p.repo import Repo")
    assert cycles(g, "p") == []
    g.add_import(importer="p.repo", imported="p.transaction", line_number=40,
                 line_contents="from p.transaction import Transaction  # in a method")
    assert cycles(g, "p") == [["p.content", "p.repo", "p.transaction"]]
