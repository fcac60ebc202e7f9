"""Warm replicas on the session stack: started and healthy out of the LB, they get no request; a scale-up
promotes the warm container itself (no container starts before the LB has it) and starts a replacement; a
scale-down turns the drained replica into the warm one; a warm replica that is not healthy is not promoted."""

from __future__ import annotations

import contextlib

import pytest
from conftest import pool_containers, snapshot
from helpers import playbook

pytestmark = pytest.mark.integration

POOL = "backend"
# Addresses of their own, off the allowlist, each well below the per-address rate limit.
SOURCES = [f"127.0.7.{i}" for i in range(1, 7)]


def scale_to(count: int, *extra: str):
    return playbook("scale.yml", "-e", f"pool={POOL}", "-e", f"replicas={count}", *extra)


def active_ports(stack) -> list[int]:
    return sorted(m["port"] for m in stack.lb_pool(POOL)["members"] if m["state"] == "active")


def port(stack, index: int) -> int:
    return stack.vars[f"app_pools_{POOL}_port_base"] + index


def test_a_warm_replica_runs_healthy_above_the_pool_and_gets_no_request(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    warm = pool_containers(engine, stack, POOL, warm=True)
    assert [c.name for c in warm] == [f"{stack.name}-{POOL}-{size + 1}-warm"]
    assert warm[0].status == "running"
    assert port(stack, size + 1) not in active_ports(stack)
    served = set()
    for source in SOURCES:
        client = stack.client(source=source)
        for _ in range(10):
            response = client.get("/api/whoami")
            assert response.status == 200
            served.add(response.json()["instance"])
    assert served == {f"{stack.name}-{POOL}-{i}" for i in range(1, size + 1)}  # the warm one's name never


def test_scale_up_promotes_the_warm_container_and_scale_down_makes_the_drained_one_warm(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    (warm,) = pool_containers(engine, stack, POOL, warm=True)
    started_at = warm.attrs["State"]["StartedAt"]
    try:
        up = scale_to(size + 1)
        assert up.rc == 0, up.output[-3000:]
        promoted = pool_containers(engine, stack, POOL)[-1]
        assert (promoted.name, promoted.id) == (f"{stack.name}-{POOL}-{size + 1}", warm.id)
        assert promoted.attrs["State"]["StartedAt"] == started_at  # the same process: nothing restarted
        assert active_ports(stack) == [port(stack, i) for i in range(1, size + 2)]
        (replacement,) = pool_containers(engine, stack, POOL, warm=True)
        assert replacement.name == f"{stack.name}-{POOL}-{size + 2}-warm"
        assert replacement.status == "running"
    finally:
        down = scale_to(size)
    assert down.rc == 0, down.output[-3000:]
    assert active_ports(stack) == [port(stack, i) for i in range(1, size + 1)]
    (demoted,) = pool_containers(engine, stack, POOL, warm=True)
    assert (demoted.name, demoted.id) == (f"{stack.name}-{POOL}-{size + 1}-warm", warm.id)
    assert len(pool_containers(engine, stack, POOL)) == size


def test_a_warm_replica_that_is_not_healthy_is_not_promoted_and_nothing_changes(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    (warm,) = pool_containers(engine, stack, POOL, warm=True)
    members = stack.lb_pool(POOL)["members"]
    warm.pause()
    try:
        before = snapshot(engine, stack)
        run = scale_to(size + 1, "-e", "app_pools_health_timeout=3")
        assert run.rc != 0
        assert "warm replica is not healthy, nothing promoted" in run.output
        assert snapshot(engine, stack) == before
        assert stack.lb_pool(POOL)["members"] == members
    finally:
        with contextlib.suppress(Exception):
            warm.unpause()


def test_a_warm_replica_that_stopped_is_started_then_promoted(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    (warm,) = pool_containers(engine, stack, POOL, warm=True)
    warm.stop(timeout=5)
    try:
        up = scale_to(size + 1)
        assert up.rc == 0, up.output[-3000:]
        promoted = pool_containers(engine, stack, POOL)[-1]
        assert (promoted.id, promoted.status) == (warm.id, "running")
        assert active_ports(stack) == [port(stack, i) for i in range(1, size + 2)]
    finally:
        down = scale_to(size)
    assert down.rc == 0, down.output[-3000:]
