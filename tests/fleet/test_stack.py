"""The whole stack on the fleet: site.yml and scale.yml with -i inventories/fleet, the pools placed in turn
over the two Docker hosts, the LB on its own host balancing over both."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import INVENTORY, ROOT, Fleet, fleet_script
from helpers import Client, playbook

pytestmark = pytest.mark.fleet

STACK = "tenfoldfleet"
IMAGES = ("tenfold/nginx:local", "tenfold/frontend:local", "tenfold/backend:local")
# The controller's address on the fleet: the clients' source.
CONTROLLER = "10.231.15.1"


def fleet_playbook(name: str, *args: str):
    return playbook(name, "-i", str(INVENTORY), *args, vars_file=None)


def lb_members(fleet: Fleet) -> dict[str, list[dict]]:
    """Each pool's members as the LB on fleet-lb holds them (its status port answers on its loopback only)."""
    url = "http://127.0.0.1:8081/members"
    code = f"import urllib.request as u; print(u.urlopen('{url}', timeout=5).read().decode())"
    run = fleet_script("ssh", "fleet-lb", f"{ROOT}/.venv/bin/python", "-c", f'"{code}"')
    assert run.rc == 0, run
    return {name: pool["members"] for name, pool in json.loads(run.out)["pools"].items()}


def placed(fleet: Fleet, pool: str) -> dict[str, list[str]]:
    """Docker host -> the names of the pool's containers on its engine, sorted."""
    return {
        host: sorted(
            c.name
            for c in fleet.engine(host).containers.list(
                all=True, filters={"label": [f"tenfold.stack={STACK}", f"tenfold.pool={pool}"]}
            )
        )
        for host in fleet.docker_hosts()
    }


@pytest.fixture(scope="module")
def stack(fleet: Fleet) -> Iterator[Fleet]:
    """The images sent to every fleet host as from a registry, then site.yml over SSH; down.yml after."""
    sent = fleet_script("images", *IMAGES, timeout=900)
    assert sent.rc == 0, sent.err
    run = fleet_playbook("site.yml")
    try:
        assert run.rc == 0, run.output[-4000:]
        yield fleet
    finally:
        down = fleet_playbook("playbooks/down.yml")
        assert down.rc == 0, down.output[-3000:]


def test_site_places_each_pool_in_turn_over_the_docker_hosts(stack):
    # 3 serving + 1 warm per pool: replica i on host (i - 1) mod 2
    assert placed(stack, "backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4-warm"],
    }
    members = lb_members(stack)["backend"]
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


def test_scale_grows_and_shrinks_a_pool_over_both_hosts(stack):
    up = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=5")
    assert up.rc == 0, up.output[-4000:]
    assert placed(stack, "backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3", f"{STACK}-backend-5"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4", f"{STACK}-backend-6-warm"],
    }
    active = {m["id"]: m["address"] for m in lb_members(stack)["backend"] if m["state"] == "active"}
    assert active == {
        f"{STACK}-backend-{i}": stack.address("fleet-d1" if i % 2 else "fleet-d2") for i in range(1, 6)
    }

    down = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    assert down.rc == 0, down.output[-4000:]
    assert placed(stack, "backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4-warm"],
    }
    assert sorted(m["id"] for m in lb_members(stack)["backend"]) == [
        f"{STACK}-backend-{i}" for i in (1, 2, 3)
    ]


def test_a_backup_records_the_pools_size_across_hosts_and_restore_brings_it_back(stack):
    assert fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=4").rc == 0
    backup = fleet_playbook("backup.yml")
    assert backup.rc == 0, backup.output[-4000:]
    assert '"backend": 4' in backup.output and '"frontend": 3' in backup.output, backup.output[-3000:]
    assert fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3").rc == 0

    restore = fleet_playbook("restore.yml", "-e", "backup=latest")
    assert restore.rc == 0, restore.output[-4000:]
    assert placed(stack, "backend") == {
        "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3", f"{STACK}-backend-5-warm"],
        "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4"],
    }
