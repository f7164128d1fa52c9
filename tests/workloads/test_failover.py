"""keepalived VRRP between two lab devices: the VIP follows the healthy device.

A crash is ``virsh destroy``: the primary's nspawn and systemd SIGKILLed at once, its NIC gone
with it. The backup must take the VIP (and answer the app's requests); when the primary is back
it takes the VIP back (preemption, keepalived's default)."""

from __future__ import annotations

from atomicedge.lab.demo_apps import AppLab, poll

TUNED = 0.2   # seconds between adverts (VRRPv3)


def test_crashed_primary_hands_the_vip_to_the_backup_and_takes_it_back(apps: AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    apps.set_advert(TUNED)
    apps.wait_holder("edge1", timeout=60)
    for _round in range(3):
        took, back = apps.failover_after_crash("edge1", "edge2")
        assert apps.holder() == "edge1"
        assert took > 0 and back >= 0
    apps.crash("edge1")
    apps.wait_holder("edge2")
    poll("the app on the backup", lambda: apps.app_ready("edge2"), 120, every=0.5)
    body, _secs = apps.get(timeout=120)
    assert body == "hello from app v1 on edge2\n"   # the VIP answers from the backup
    apps.up("edge1")
    apps.wait_holder("edge1")
    apps.set_advert(1.0)


def test_graceful_stop_hands_the_vip_over_and_back(apps: AppLab) -> None:
    apps.wait_holder("edge1", timeout=180)
    took = apps.failover_after_stop("edge1", "edge2")
    assert took > 0
    assert apps.holder() == "edge1"
