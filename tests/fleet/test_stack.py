"""The whole stack on the fleet: site.yml and scale.yml with -i inventories/fleet, the pools placed in turn
over the two Docker hosts, the LB on its own host balancing over both."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from fleetlib import CONTROLLER, STACK, fleet_playbook, fleet_status, lb_members, placed
from helpers import Client

pytestmark = pytest.mark.fleet


def test_site_places_each_pool_in_turn_over_the_docker_hosts(stack):
    # 3 serving + 1 warm per pool: replica i on host (i - 1) mod 2
    assert placed("backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4-warm"],
    }
    members = lb_members()["backend"]
    assert sorted((m["id"], m["address"], m["state"]) for m in members) == [
        (f"{STACK}-backend-1", stack.address("fleet-d1"), "active"),
        (f"{STACK}-backend-2", stack.address("fleet-d2"), "active"),
        (f"{STACK}-backend-3", stack.address("fleet-d1"), "active"),
    ]


def test_the_lb_host_balances_over_both_docker_hosts(stack):
    client = Client(443, source=CONTROLLER, host=stack.address("fleet-lb"))
    served = Counter(client.get("/api/whoami").json()["instance"] for _ in range(12))
    assert set(served) == {f"{STACK}-backend-{i}" for i in (1, 2, 3)}, served


def test_a_client_stays_on_its_frontend_replica_across_hosts(stack):
    client = Client(443, source=CONTROLLER, host=stack.address("fleet-lb"))
    seen = {client.get("/whoami").json()["instance"] for _ in range(8)}
    assert len(seen) == 1, seen


def test_status_on_the_lb_host_shows_every_docker_hosts_replicas(stack):
    status = fleet_status()
    assert status["docker_hosts"] == ["fleet-d1", "fleet-d2"] and status["unreachable_hosts"] == {}
    assert status["lb"]["state"] == "running"
    backend = {r["name"]: (r["host"], r["lb_state"]) for r in status["replicas"] if r["pool"] == "backend"}
    assert backend == {
        f"{STACK}-backend-1": ("fleet-d1", "active"),
        f"{STACK}-backend-2": ("fleet-d2", "active"),
        f"{STACK}-backend-3": ("fleet-d1", "active"),
        f"{STACK}-backend-4-warm": ("fleet-d2", "absent"),
    }
    assert [(p["pool"], p["running"], p["in_lb"], p["warm"]) for p in status["pools"]] == [
        ("frontend", 3, 3, 1),
        ("backend", 3, 3, 1),
    ]


def test_scale_grows_and_shrinks_a_pool_over_both_hosts(stack):
    up = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=5")
    assert up.rc == 0, up.output[-4000:]
    assert placed("backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3", f"{STACK}-backend-5"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4", f"{STACK}-backend-6-warm"],
    }
    active = {m["id"]: m["address"] for m in lb_members()["backend"] if m["state"] == "active"}
    assert active == {
        f"{STACK}-backend-{i}": stack.address("fleet-d1" if i % 2 else "fleet-d2") for i in range(1, 6)
    }

    down = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    assert down.rc == 0, down.output[-4000:]
    assert placed("backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4-warm"],
    }
    assert sorted(m["id"] for m in lb_members()["backend"]) == [f"{STACK}-backend-{i}" for i in (1, 2, 3)]


@pytest.mark.long
def test_a_backup_records_the_pools_size_across_hosts_and_restore_brings_it_back(stack):
    assert fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=4").rc == 0
    backup = fleet_playbook("backup.yml")
    assert backup.rc == 0, backup.output[-4000:]
    assert re.search(r'replicas \{\\"frontend\\": 3, \\"backend\\": 4\}', backup.output), backup.output[
        -3000:
    ]
    assert fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3").rc == 0

    restore = fleet_playbook("restore.yml", "-e", "backup=latest")
    assert restore.rc == 0, restore.output[-4000:]
    assert placed("backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3", f"{STACK}-backend-5-warm"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4"],
    }
