"""Warm replicas on the session stack: started and healthy out of the LB, they get no request; a scale-up
promotes the warm container itself (no container starts before the LB has it) and starts a replacement; a
scale-down turns the drained replica into the warm one; a warm replica that is not healthy is not promoted.
The monitor's fast path promotes one in its own process, under scale.yml's lock, and records the event."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import lock as tenfold_lock
from ansible_collections.tenfold.stack.plugins.module_utils.lb import Client
from conftest import plain, pool_containers, put, snapshot
from helpers import EVENTS_LOG, SCALE_LOCK, events_count, events_since, playbook
from tenfold_monitor.engines import Engines
from tenfold_monitor.promote import FastPath

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


def fast_path(stack, lb: type[Client] = Client) -> FastPath:
    """The monitor's fast path on the session stack: its lock and events file are scale.yml's."""
    path = FastPath(
        stack.name,
        Engines(),
        f"http://127.0.0.1:{stack.status_port}",
        SCALE_LOCK,
        EVENTS_LOG,
    )
    path.lb = lb(path.lb.url)
    return path


def test_the_monitors_fast_path_promotes_a_warm_replica_and_scale_yml_replaces_it(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    (warm,) = pool_containers(engine, stack, POOL, warm=True)
    before = events_count()
    try:
        promotion = fast_path(stack).promote(POOL, size, size + 1)
        assert promotion.result == "ok", promotion.reason
        assert promotion.promoted == (f"{stack.name}-{POOL}-{size + 1}",)
        promoted = pool_containers(engine, stack, POOL)[-1]
        assert (promoted.name, promoted.id) == (promotion.promoted[0], warm.id)
        assert active_ports(stack) == [port(stack, i) for i in range(1, size + 2)]
        (event,) = events_since(before)
        assert (event["trigger"], event["result"], event["request"]["path"]) == ("monitor", "ok", "warm")
        assert [(p["pool"], p["current"], p["target"]) for p in event["pools"]] == [(POOL, size, size + 1)]
        assert not (SCALE_LOCK).exists()
        assert not pool_containers(engine, stack, POOL, warm=True)
        # What the monitor runs next: scale.yml at the new size starts the promoted one's replacement.
        rest = scale_to(size + 1, "-e", f"expect_current={size + 1}")
        assert rest.rc == 0, rest.output[-3000:]
        (replacement,) = pool_containers(engine, stack, POOL, warm=True)
        assert replacement.name == f"{stack.name}-{POOL}-{size + 2}-warm"
    finally:
        down = scale_to(size)
    assert down.rc == 0, down.output[-3000:]


def test_the_fast_path_does_nothing_while_a_scale_run_holds_the_lock_or_the_pool_moved(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    before = snapshot(engine, stack), stack.lb_pool(POOL), events_count()
    stale = fast_path(stack).promote(POOL, size - 1, size)
    assert (stale.result, stale.promoted) == ("skipped", ())
    assert "stale" in stale.reason
    lock = SCALE_LOCK
    run = subprocess.Popen(["sleep", "60"])  # a live scale run (not this process: the lock is re-entrant)
    owner = tenfold_lock.owner_for(run.pid, run="test_warm: a scale run in progress")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(vars(owner)))
    try:
        held = fast_path(stack).promote(POOL, size, size + 1)
    finally:
        tenfold_lock.release(str(lock), owner)
        run.kill()
        run.wait()
    assert (held.result, held.promoted) == ("skipped", ())
    assert "another run holds" in held.reason
    assert (snapshot(engine, stack), stack.lb_pool(POOL), events_count()) == before


def test_a_member_write_the_lb_refuses_leaves_the_warm_replica_warm_and_is_recorded(engine, stack):
    size = len(pool_containers(engine, stack, POOL))
    (warm,) = pool_containers(engine, stack, POOL, warm=True)
    members = stack.lb_pool(POOL)["members"]

    class Raced(Client):
        """Another writer changes the pool between the fast path's read and its write."""

        def replace(self, pool, generation, wanted):
            status, body = put(stack, pool, plain(members))
            assert status == 200, body
            return super().replace(pool, generation, wanted)

    before = events_count()
    promotion = fast_path(stack, Raced).promote(POOL, size, size + 1)
    assert (promotion.result, promotion.promoted) == ("failed", ())
    assert "409" in promotion.reason
    assert [c.id for c in pool_containers(engine, stack, POOL, warm=True)] == [warm.id]
    assert active_ports(stack) == [port(stack, i) for i in range(1, size + 1)]
    (event,) = events_since(before)
    assert (event["trigger"], event["result"]) == ("monitor", "failed")
