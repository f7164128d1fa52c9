"""Pure parts: dpkg status parsing, package diff, TOML line locator, password hashing."""

from __future__ import annotations

from atomicedge.compose import lines, pkgdb
from atomicedge.compose.custom.accounts import hash_password

STATUS = """Package: a
Status: install ok installed
Architecture: amd64
Version: 1.0

Package: b
Status: deinstall ok config-files
Architecture: amd64
Version: 2.0

Package: c
Status: install ok installed
Architecture: all
Version: 3.0
Description: multi
 line
"""


def test_status_lists_only_installed_packages() -> None:
    pkgs = pkgdb.parse_status(STATUS)
    assert sorted(pkgs) == ["a", "c"]
    assert pkgs["c"] == pkgdb.Package("c", "3.0", "all")


def test_diff_reports_added_removed_upgraded() -> None:
    old = {"a": pkgdb.Package("a", "1", "x"), "b": pkgdb.Package("b", "1", "x")}
    new = {"a": pkgdb.Package("a", "2", "x"), "c": pkgdb.Package("c", "1", "x")}
    d = pkgdb.diff(old, new)
    assert [p.name for p in d.added] == ["c"]
    assert [p.name for p in d.removed] == ["b"]
    assert [(a.version, b.version) for a, b in d.upgraded] == [("1", "2")]


def test_line_locator_follows_array_tables_and_dotted_keys() -> None:
    text = ('name = "x"\n[[customizations.user]]\nname = "a"\n[[customizations.user]]\n'
            'name = "b"\nuid = 5\n[customizations]\nfirewall.ports = ["1:tcp"]\n')
    pos = lines.toml_positions(text)
    assert lines.locate(pos, "customizations.user[1].uid") == 6
    assert lines.locate(pos, "customizations.user[1].shell") == 4   # enclosing table
    assert lines.locate(pos, "customizations.firewall.ports") == 8


def test_password_hash_is_sha512_crypt_and_stable_per_seed() -> None:
    h1 = hash_password("secret", "img\0admin")
    assert h1.startswith("$6$") and h1 == hash_password("secret", "img\0admin")
    assert h1 != hash_password("secret", "img\0other")
    assert hash_password("$6$abc$def", "x") == "$6$abc$def"
