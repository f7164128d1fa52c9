"""systemd's ``Restart=`` in a booted device, against the seed's table.

For each exit cause and each policy one unit (in the device's /run/systemd/system) causes its
exit once — a marker file makes every later run harmless — and the test reads ``NRestarts``
and ``Result``: a restart must happen exactly where the seed's table has an X.
"""

from __future__ import annotations

import pytest

from atomicedge.errors import ToolError
from atomicedge.lab.demo_apps import AppLab, poll

POLICIES = ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog")
# the seed's table (002, "Auto restart"): cause -> policies that restart
TABLE = {
    "clean": {"always", "on-success"},
    "exit-code": {"always", "on-failure"},
    "signal": {"always", "on-failure", "on-abnormal", "on-abort"},
    "timeout": {"always", "on-failure", "on-abnormal"},
    "watchdog": {"always", "on-failure", "on-abnormal", "on-watchdog"},
}
RESULT = {"clean": "success", "exit-code": "exit-code", "signal": "signal",
          "timeout": "timeout", "watchdog": "watchdog"}
ONCE = "[ -e /run/rt/{name} ] && exec sleep infinity; touch /run/rt/{name}; "
CAUSE = {  # [Service] lines; the first run exits for this cause
    "clean": "ExecStart=/bin/sh -c '" + ONCE + "exit 0'\n",
    "exit-code": "ExecStart=/bin/sh -c '" + ONCE + "exit 3'\n",
    "signal": "ExecStart=/bin/sh -c '" + ONCE + "kill -9 $$$$'\n",  # systemd: $$ -> $
    "timeout": ("ExecStartPre=/bin/sh -c '[ -e /run/rt/{name} ] || "
                "{{ touch /run/rt/{name}; sleep 60; }}'\n"
                "ExecStart=/bin/sleep infinity\nTimeoutStartSec=1s\n"),
    "watchdog": ("ExecStart=/bin/sh -c '[ -e /run/rt/{name} ] || touch /run/rt/{name}; "
                 "exec sleep infinity'\nWatchdogSec=1s\n"),
}


def _unit(cause: str, policy: str) -> tuple[str, str]:
    name = f"rt-{cause}-{policy}"
    text = ("[Service]\n" + CAUSE[cause].format(name=name) + f"Restart={policy}\n"
            "RestartSec=100ms\n")
    return f"{name}.service", text


def _show(apps: AppLab, units: list[str]) -> dict[str, dict[str, str]]:
    out = apps.lab.run("edge2", ["systemctl", "show", "-p", "Id,NRestarts,ActiveState,Result",
                                 *units], timeout=60).stdout
    props: dict[str, dict[str, str]] = {}
    for block in out.strip().split("\n\n"):
        kv = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        props[kv["Id"]] = kv
    return props


@pytest.fixture(scope="module")
def outcomes(apps: AppLab) -> dict[tuple[str, str], dict[str, str]]:
    units = {(c, p): _unit(c, p) for c in TABLE for p in POLICIES}
    script = "mkdir -p /run/rt\n" + "".join(
        f"cat > /run/systemd/system/{n} <<'UNIT'\n{t}UNIT\n" for n, t in units.values())
    apps.lab.run("edge2", ["sh", "-e"], input_text=script + "systemctl daemon-reload\n")
    names = [n for n, _ in units.values()]
    apps.lab.run("edge2", ["systemctl", "start", "--no-block", *names])

    def settled() -> dict[str, dict[str, str]] | None:
        ran = set(apps.lab.run("edge2", ["ls", "/run/rt"]).stdout.split())
        if ran != {n.removesuffix(".service") for n in names}:
            return None  # not every unit has had its first run yet
        props = _show(apps, names)
        for (cause, policy), (n, _t) in units.items():
            p = props[n]
            if policy in TABLE[cause]:
                if int(p["NRestarts"]) < 1:
                    return None
            elif not (p["ActiveState"] in ("inactive", "failed")
                      and p["Result"] == RESULT[cause]):
                return None
        return props
    try:
        props = poll("every unit to exit once (and restart where it should)", settled, 120,
                     every=0.5)
    except ToolError:
        ran = apps.lab.run("edge2", ["ls", "/run/rt"]).stdout.split()
        raise AssertionError(f"ran: {ran}; units: {_show(apps, names)}") from None
    apps.lab.run("edge2", ["systemctl", "stop", *names])
    return {k: props[n] for k, (n, _t) in units.items()}


@pytest.mark.parametrize("cause", list(TABLE))
def test_restart_happens_exactly_where_the_seed_table_says(
        outcomes: dict[tuple[str, str], dict[str, str]], cause: str) -> None:
    restarted = {p for p in POLICIES if int(outcomes[(cause, p)]["NRestarts"]) >= 1}
    assert restarted == TABLE[cause]
    for p in POLICIES:
        if p not in TABLE[cause]:
            assert outcomes[(cause, p)]["NRestarts"] == "0"
            assert outcomes[(cause, p)]["Result"] == RESULT[cause]
