"""Blueprint data model: the typed result of a validated osbuild-style TOML/JSON blueprint.

The model is deliberately plain (frozen dataclasses, no behaviour) so that the build, the cache key
and a future composer service all see the same value. Parsing and the validation rules live in
:mod:`atomicedge.compose.validate`; this module only says what a valid blueprint looks like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atomicedge.errors import UsageError

DEFAULT_DISTRO = "debian-12"
# blueprint distro name -> (Debian suite, major version used in the default ref)
DISTROS: dict[str, tuple[str, str]] = {"debian-12": ("bookworm", "12")}


@dataclass(frozen=True)
class PackageSpec:
    name: str               # exact name or glob
    version: str = "*"      # version glob
    line: int | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """``[[containers]]``: an image pulled at compose time into the commit's image store."""

    source: str                     # fully qualified reference (tag or @sha256:...)
    name: str | None = None         # stored under this name instead of ``source``
    tls_verify: bool = True


@dataclass(frozen=True)
class User:
    name: str
    description: str | None = None
    password: str | None = None     # plain or crypt(3) string; hashed at build time
    key: str | None = None
    home: str | None = None
    shell: str | None = None
    groups: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None
    expiredate: int | None = None   # days since the epoch
    force_password_reset: bool = False


@dataclass(frozen=True)
class Group:
    name: str
    gid: int | None = None


@dataclass(frozen=True)
class SshKey:
    user: str
    key: str


@dataclass(frozen=True)
class FileSpec:
    path: str
    data: str = ""
    mode: int = 0o644
    user: str | int = "root"
    group: str | int = "root"


@dataclass(frozen=True)
class DirSpec:
    path: str
    mode: int = 0o755
    user: str | int = "root"
    group: str | int = "root"
    ensure_parents: bool = False


@dataclass(frozen=True)
class PortSpec:
    """``8080:tcp`` or ``30000-32767:udp``; ``service`` set when the port was a service name."""

    port: str
    proto: str

    def firewalld(self) -> str:
        return f"{self.port}/{self.proto}"


@dataclass(frozen=True)
class Zone:
    name: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Firewall:
    ports: tuple[PortSpec, ...] = ()
    enabled_services: tuple[str, ...] = ()
    disabled_services: tuple[str, ...] = ()
    zones: tuple[Zone, ...] = ()

    def empty(self) -> bool:
        return not (self.ports or self.enabled_services or self.disabled_services or self.zones)


@dataclass(frozen=True)
class Services:
    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Customizations:
    hostname: str | None = None
    kernel_name: str | None = None
    kernel_append: str | None = None
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    sshkeys: tuple[SshKey, ...] = ()
    timezone: str | None = None
    ntpservers: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    keyboard: str | None = None
    firewall: Firewall = field(default_factory=Firewall)
    services: Services = field(default_factory=Services)
    files: tuple[FileSpec, ...] = ()
    directories: tuple[DirSpec, ...] = ()


@dataclass(frozen=True)
class Blueprint:
    name: str
    description: str = ""
    version: str = "0.0.0"
    distro: str = DEFAULT_DISTRO
    packages: tuple[PackageSpec, ...] = ()
    groups: tuple[PackageSpec, ...] = ()   # Debian tasks: group "X" -> package "task-X"
    containers: tuple[ContainerSpec, ...] = ()
    customizations: Customizations = field(default_factory=Customizations)
    source: str = ""                       # file name, for messages

    @property
    def suite(self) -> str:
        return DISTROS[self.distro][0]

    @property
    def major(self) -> str:
        return DISTROS[self.distro][1]


@dataclass(frozen=True)
class Problem:
    """One validation finding: where (path + line), what, and how to fix it."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def render(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.path}: {self.message}{hint}"


class BlueprintError(UsageError):
    """A blueprint with one or more problems; the message lists all of them, one per line."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        n = len(self.problems)
        head = f"blueprint {source} has {n} problem{'s' if n != 1 else ''}"
        body = "\n".join(f"  {p.render()}" for p in self.problems)
        super().__init__(f"{head}; nothing was built:\n{body}")
