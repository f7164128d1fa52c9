"""``make demo`` part 1: compose the example gateway blueprint v1, then v2 (adds strace) with v1
as parent, and show the package diff — the image builder story of the seeds, on Debian.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from atomicedge.compose import pkgdb
from atomicedge.compose.apt import Sources
from atomicedge.compose.build import ComposeRequest, Steps, compose
from atomicedge.compose.validate import load
from atomicedge.errors import NotFoundError
from atomicedge.ostree.repo import Repo

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class _ConsoleSteps(Steps):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def finished(self, name: str, seconds: float) -> None:
        self.console.print(f"  [green]✓[/green] {name} [dim]{seconds:.2f} s[/dim]")

    def note(self, text: str) -> None:
        self.console.print(f"  [cyan]•[/cyan] {text}")


def run(workdir: Path, console: Console, *, sources: Sources | None = None,
        profile: str = "edge", examples: Path = EXAMPLES) -> dict[str, object]:
    """Compose v1 and v2 into ``workdir/repo``; return commits, refs and the package diff."""
    if not (examples / "gateway-v1.toml").exists():
        raise NotFoundError(f"{examples}/gateway-v1.toml not found", "run from the source tree")
    workdir.mkdir(parents=True, exist_ok=True)
    repo_path = workdir / "repo"
    repo = Repo.open(repo_path) if (repo_path / "config").exists() else \
        Repo.init(repo_path, mode="archive")
    sources = sources or Sources.host()
    results = {}
    parent: str | None = "none"
    for version in ("v1", "v2"):
        bp = load(examples / f"gateway-{version}.toml")
        console.print(f"[bold]compose {bp.name} {bp.version}[/bold] ({version}, profile {profile})")
        res = compose(ComposeRequest(bp, repo.path, sources, parent=parent, profile=profile),
                      _ConsoleSteps(console))
        console.print(f"  commit {res.commit[:16]}  ref {res.ref}  packages {res.packages}")
        results[version] = res
        parent = res.commit
    d = pkgdb.diff(pkgdb.packages(repo, results["v1"].commit),
                   pkgdb.packages(repo, results["v2"].commit))
    console.print("[bold]packages v1 -> v2[/bold]")
    for line in pkgdb.diff_lines(d):
        console.print(f"  {line}")
    return {"repo": repo.path, "ref": results["v2"].ref, "v1": results["v1"].commit,
            "v2": results["v2"].commit, "added": [p.name for p in d.added],
            "removed": [p.name for p in d.removed],
            "upgraded": [a.name for a, _ in d.upgraded]}
