"""Faults on the fleet: a Docker host lost under load, and one unreachable when scale.yml starts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Fleet
from fleetlib import (
    CLIENTS,
    STACK,
    FleetMonitor,
    engine,
    fleet_playbook,
    fleet_script,
    fleet_status,
    lb_members,
    placed,
    serving_at,
)
from helpers import wait_for
from load import Load

pytestmark = pytest.mark.fleet

BASELINE = {
    "fleet-d1": [f"{STACK}-backend-1", f"{STACK}-backend-3"],
    "fleet-d2": [f"{STACK}-backend-2", f"{STACK}-backend-4-warm"],
}
# The backend's policy for these tests: 3 to 10 replicas, short cooldowns so that a test sees it act.
POLICY = {"min_replicas": 3, "max_replicas": 10, "cooldown_s": 5.0, "up_cooldown_s": 2.0}


@pytest.fixture
def fleet_monitor(stack: Fleet, tmp_path: Path) -> Iterator[FleetMonitor]:
    monitor = FleetMonitor(tmp_path, {"backend": POLICY})
    try:
        yield monitor
    finally:
        monitor.service("stop")


def member_set(fleet: Fleet) -> dict[str, list[tuple[str, str, str]]]:
    return {
        pool: sorted((m["id"], m["address"], m["state"]) for m in ms) for pool, ms in lb_members().items()
    }


@pytest.mark.long
def test_a_docker_host_cut_under_load_is_drained_and_its_capacity_returns(stack, fleet_monitor):
    assert placed("backend") == BASELINE
    assert "started" in fleet_monitor.service("start")
    load = Load(
        443, ["/api/work?ms=20"], rate=40, workers=40, sources=CLIENTS[:40], host=stack.address("fleet-lb"),
        max_seconds=180,
    )  # fmt: skip
    try:
        with load:
            time.sleep(8)  # the monitor's window fills; the clients' connections are open
            assert load.tally.failed == 0, load.tally.failures
            assert fleet_script("cut", "fleet-d1").rc == 0
            cut = time.monotonic()
            # The LB stops sending to the lost host's replicas (passive failure marks, or they left).
            wait_for(lambda: serving_at("backend", "fleet-d1") == [], timeout=60)
            lb_off = time.monotonic() - cut
            # The monitor restores the pool's size on the host it still reaches.
            wait_for(lambda: len(serving_at("backend", "fleet-d2")) >= 3, timeout=150)
            restored = time.monotonic() - cut
            time.sleep(5)
    finally:
        fleet_script("restore", "fleet-d1")
        fleet_monitor.service("stop")
    print(f"\ncut -> LB off fleet-d1 {lb_off:.1f} s, cut -> 3 backend replicas on fleet-d2 {restored:.1f} s")
    print(f"requests {load.tally.sent}, failed {load.tally.failed}: {dict(load.tally.failures)}")
    # A GET the LB had sent the lost host (in flight at the cut, or sent before the monitor drained it) fails
    # over to another replica when the LB host's TCP gives up on it (nginx_lb_tcp_retries2: 6.2 s), so the
    # clients see none fail, only those requests slow.
    assert load.tally.failed == 0, load.tally.failures
    assert load.tally.sent > 40 * 10  # the clients ran through the cut

    # Back on the network, the host rejoins with a site.yml run: the pool (at the size the monitor left it)
    # placed over both hosts again, each replica once, and the LB's members are theirs.
    site = fleet_playbook("site.yml")
    assert site.rc == 0, site.output[-4000:]
    assert_placed_in_turn(stack)
    assert fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3").rc == 0
    assert placed("backend") == BASELINE


def assert_placed_in_turn(fleet: Fleet) -> None:
    """Replica i of the backend on host (i - 1) mod 2 only, and the LB's members exactly the serving ones."""
    hosts = fleet.docker_hosts()
    found = placed("backend")
    serving = {}
    for host, names in found.items():
        for name in names:
            index = int(name.removeprefix(f"{STACK}-backend-").removesuffix("-warm"))
            assert hosts[(index - 1) % len(hosts)] == host, found
            if not name.endswith("-warm"):
                serving[name] = fleet.address(host)
    members = {m["id"]: m["address"] for m in lb_members()["backend"] if m["state"] == "active"}
    assert members == serving


def test_scale_yml_with_a_docker_host_unreachable_fails_naming_it_and_changes_nothing(stack):
    before_placed, before_members = placed("backend"), member_set(stack)
    assert fleet_script("cut", "fleet-d2").rc == 0
    try:
        run = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=5", timeout=300)
        reachable = placed("backend", ["fleet-d1"])
        status = fleet_status()  # names the lost host, shows the others' replicas
    finally:
        fleet_script("restore", "fleet-d2")
    assert run.rc != 0
    assert "fleet-d2" in run.output and "UNREACHABLE" in run.output, run.output[-3000:]
    assert reachable == {"fleet-d1": before_placed["fleet-d1"]}
    assert list(status["unreachable_hosts"]) == ["fleet-d2"]
    assert {r["host"] for r in status["replicas"]} == {"fleet-d1"}
    assert placed("backend") == before_placed
    assert member_set(stack) == before_members
    # The next run takes the lock the failed one left (its process is gone) and works.
    again = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    assert again.rc == 0, again.output[-3000:]


def test_a_docker_host_lost_during_scale_yml_takes_back_what_the_others_did(stack):
    before_placed, before_members = placed("backend"), member_set(stack)
    new_on_d2 = {"name": f"^{STACK}-backend-6$"}  # 3 -> 7: fleet-d2 starts replica 6, fleet-d1 5 and 7
    try:
        with ThreadPoolExecutor(1) as runner:
            scaling = runner.submit(
                fleet_playbook, "scale.yml", "-e", "pool=backend", "-e", "replicas=7", timeout=300
            )
            try:
                # cut fleet-d2 while it waits for its new replica's health; fleet-d1 finishes starting its
                # own (ignore_removed: a container listed may be gone when the SDK inspects it)
                d2 = engine("fleet-d2")

                def started() -> list:
                    return d2.containers.list(all=True, filters=new_on_d2, ignore_removed=True)

                assert wait_for(started, 120, step=0.1)
                assert fleet_script("cut", "fleet-d2").rc == 0
                run = scaling.result(timeout=300)
                reachable = placed("backend", ["fleet-d1"])
            finally:
                fleet_script("restore", "fleet-d2")
        assert run.rc != 0
        assert "Docker host(s) fleet-d2 failed or were lost during the run" in run.output, run.output[-3000:]
        # fleet-d1 took its new replicas back; the LB never saw any of this run's replicas
        assert reachable == {"fleet-d1": before_placed["fleet-d1"]}
        assert member_set(stack) == before_members
    finally:
        # Back on the network, the next run (the lock is free) reconciles what fleet-d2 had started; it
        # also puts the pool back for the tests after this one if an assertion above failed.
        again = fleet_playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    assert again.rc == 0, again.output[-3000:]
    assert placed("backend") == before_placed
    assert member_set(stack) == before_members
