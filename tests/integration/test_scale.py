"""scale.yml on the real stack: under continuous load, adding and removing replicas fails no request, and
never reloads nginx (the LB's members change live)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
from benchkit.load import Load
from conftest import pool_containers, stack_containers
from helpers import (
    BIN,
    ROOT,
    SCALE_LOCK,
    STACK_VARS,
    ansible_env,
    events_count,
    events_since,
    playbook,
    wait_for,
)
from test_monitor import MonitorProcess

pytestmark = pytest.mark.integration

# Twelve clients off the allowlist, 5 req/s each: the rate limiter (10 req/s per address) lets them be.
LOAD_SOURCES = [f"127.0.6.{i}" for i in range(1, 13)]
LOAD_PATHS = ["/api/work?ms=20", "/whoami", "/api/whoami", "/"]
# Clients as the Internet sends them: an address each, none on the allowlist (stack.yml), each well below the
# per-address limits (4 req/s, one keep-alive connection).
CLIENTS = [f"127.0.5.{i}" for i in range(1, 37)]
# Twenty scale events, both pools, up and down, ending where the stack started.
EVENTS_PLAN = [
    ("backend", 5), ("frontend", 4), ("backend", 7), ("frontend", 5), ("backend", 10),
    ("frontend", 4), ("backend", 6), ("frontend", 3), ("backend", 3), ("frontend", 4),
    ("backend", 6), ("frontend", 5), ("backend", 8), ("frontend", 4), ("backend", 4),
    ("frontend", 3), ("backend", 5), ("frontend", 4), ("backend", 3), ("frontend", 3),
]  # fmt: skip


def scale(*extra: str):
    return playbook("scale.yml", *(arg for pair in extra for arg in ("-e", pair)))


def replicas(engine, stack, pool: str) -> list[int]:
    return [int(c.labels["tenfold.replica"]) for c in pool_containers(engine, stack, pool)]


def members(stack, pool: str) -> list[int]:
    """Ports of the pool's active members in the running LB."""
    return sorted(m["port"] for m in stack.lb_pool(pool)["members"] if m["state"] == "active")


def port_base(stack, pool: str) -> int:
    return stack.vars[f"app_pools_{pool}_port_base"]


def assert_pool(engine, stack, pool: str, count: int) -> None:
    assert replicas(engine, stack, pool) == list(range(1, count + 1))
    assert members(stack, pool) == [port_base(stack, pool) + i for i in range(1, count + 1)]


def instances_of(clients) -> list[str]:
    return [client.get("/whoami").json()["instance"] for client in clients]


@pytest.mark.long
def test_twenty_scale_events_fail_no_request_keep_sessions_and_never_reload(engine, stack):
    before = events_count()
    workers = stack.lb_workers(engine)
    sticky = [stack.client(source=f"127.0.6.{i}") for i in range(1, 25)]
    with Load(stack.https_port, LOAD_PATHS, rate=144, workers=36, sources=CLIENTS, max_seconds=600) as load:
        homes = instances_of(sticky)
        assert len(set(homes)) >= 2, "the sticky clients should start spread over the frontend replicas"
        for pool, count in EVENTS_PLAN:
            run = scale(f"pool={pool}", f"replicas={count}")
            assert run.rc == 0, run.output[-4000:]
            assert_pool(engine, stack, pool, count)
            if pool == "frontend":
                # A client stays on its replica while that replica is in the pool; only a removed
                # replica's clients move.
                now = instances_of(sticky)
                for home, current in zip(homes, now, strict=True):
                    if int(home.rsplit("-", 1)[1]) <= count:
                        assert current == home
                homes = now
        time.sleep(2)

    tally = load.tally
    assert tally.failed == 0, dict(tally.failures)
    assert load.rate >= 120, f"{load.rate:.0f} req/s"
    assert tally.by_path["/api/work"] > 0 and tally.by_path["/whoami"] > 0
    assert stack.lb_workers(engine) == workers, "nginx was reloaded: its worker processes changed"
    print(f"\nload: {tally.sent} requests at {load.rate:.0f}/s from {len(CLIENTS)} clients, no retry")

    recorded = events_since(before)
    assert [e["result"] for e in recorded] == ["ok"] * len(EVENTS_PLAN)
    backend_up = next(p for p in recorded[0]["pools"] if p["pool"] == "backend")
    assert (backend_up["current"], backend_up["target"], backend_up["direction"]) == (3, 5, "up")
    assert recorded[0]["trigger"] == "manual"
    assert all(e["stack"] == stack.name and e["duration_s"] > 0 for e in recorded)


def test_replicas_that_never_become_healthy_are_removed_and_nothing_changes(engine, stack):
    # Without a warm replica, so that the run starts new ones (a warm one is checked first: test_warm.py).
    cold = "app_pools_backend_warm_replicas=0"
    assert scale("pool=backend", "replicas=3", cold).rc == 0
    backend = stack.lb_pool("backend")
    before = events_count()
    try:
        with Load(
            stack.https_port, LOAD_PATHS, rate=60, workers=12, sources=LOAD_SOURCES, max_seconds=120
        ) as load:
            run = scale(
                "pool=backend",
                "replicas=5",
                cold,
                "app_pools_health_path=/never-healthy",
                "app_pools_health_timeout=3",
            )
        assert run.rc != 0
        assert "never became healthy" in run.output
        assert_pool(engine, stack, "backend", 3)
        assert stack.lb_pool("backend")["generation"] == backend["generation"]
        assert load.tally.failed == 0, dict(load.tally.failures)
        event = events_since(before)[-1]
        assert event["result"] == "failed"
        assert "Reconcile" in event["failed_task"]
    finally:
        assert scale("pool=backend", "replicas=3").rc == 0  # its warm replica back


def test_a_replica_docker_cannot_start_is_not_left_behind(engine, stack):
    # Replica 5's host port taken by another program: Docker creates the container, then cannot start it.
    cold = "app_pools_backend_warm_replicas=0"
    assert scale("pool=backend", "replicas=3", cold).rc == 0
    try:
        with socket.create_server(("127.0.0.1", port_base(stack, "backend") + 5)):
            run = scale("pool=backend", "replicas=5", cold)
        assert run.rc != 0
        assert f"could not start {stack.name}-backend-5" in run.output, run.output[-3000:]
        assert_pool(engine, stack, "backend", 3)
        assert [c.name for c in stack_containers(engine, stack.name) if c.status == "created"] == []
    finally:
        assert scale("pool=backend", "replicas=3").rc == 0  # its warm replica back


@pytest.mark.long
def test_scale_run_the_lb_does_not_take_puts_the_pools_back(engine, stack):
    """The LB's members API does not answer (a status port nothing listens on): nothing changes."""
    backend = stack.lb_pool("backend")
    before = events_count()
    load = Load(stack.https_port, LOAD_PATHS, rate=60, workers=6, sources=CLIENTS, max_seconds=120)
    with load:
        run = scale("pool=backend", "replicas=5", "nginx_lb_status_port=28999")
    assert run.rc != 0
    assert "members API at http://127.0.0.1:28999 did not answer" in run.output
    assert_pool(engine, stack, "backend", 3)
    assert stack.lb_pool("backend")["generation"] == backend["generation"]
    assert load.tally.failed == 0, dict(load.tally.failures)
    event = events_since(before)[-1]
    assert event["result"] == "failed"
    assert "did not answer" in event["error"]
    # The lock was given back: the next run does not wait for it, nor recover it.
    run = scale("direction=up", "pool=backend")
    assert run.rc == 0 and "recovered the lock" not in run.output
    assert scale("pool=backend", "replicas=3").rc == 0


def test_scale_check_diff_shows_the_change_and_changes_nothing(engine, stack):
    containers = {c.name: c.id for c in stack_containers(engine, stack.name)}
    backend = stack.lb_pool("backend")
    before = events_count()
    run = playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=5", "--check", "--diff")
    assert run.rc == 0, run.output[-3000:]
    backend_5 = port_base(stack, "backend") + 5
    assert f"+{stack.name}-backend-5 127.0.0.1:{backend_5} active" in run.output
    assert {c.name: c.id for c in stack_containers(engine, stack.name)} == containers
    assert stack.lb_pool("backend") == backend
    assert events_count() == before


def test_request_beyond_the_bounds_is_clamped_and_says_so(engine, stack):
    run = scale("direction=down", "pool=backend")
    assert run.rc == 0, run.output[-3000:]
    assert "clamped to the minimum of 3" in run.output
    assert_pool(engine, stack, "backend", 3)


def start_scale(*extra: str) -> subprocess.Popen:
    """scale.yml in the background (stdout and stderr together)."""
    args = [str(BIN / "ansible-playbook"), "scale.yml", "-e", f"@{STACK_VARS}"]
    args += [arg for pair in extra for arg in ("-e", pair)]
    return subprocess.Popen(
        args, cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.long
def test_two_concurrent_scale_runs_do_not_interleave(engine, stack):
    before = events_count()
    first = start_scale("pool=backend", "replicas=5")
    time.sleep(1.5)
    second = start_scale("direction=up", "pool=backend")
    outputs = [proc.communicate(timeout=300)[0] for proc in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    # The second run waited for the first, then planned from its result: 5 -> 6, not 3 -> 4.
    assert_pool(engine, stack, "backend", 6)
    plans = {
        e["request"]["replicas"] or e["request"]["direction"]: next(
            p for p in e["pools"] if p["pool"] == "backend"
        )
        for e in events_since(before)
    }
    assert (plans["5"]["current"], plans["5"]["target"]) == (3, 5)
    assert (plans["up"]["current"], plans["up"]["target"]) == (5, 6)
    assert scale("pool=backend", "replicas=3").rc == 0


def test_lock_left_by_a_killed_run_is_recovered(engine, stack):
    lock = SCALE_LOCK
    ghost = subprocess.Popen(["sleep", "0"])
    ghost.wait()
    stat = {
        "pid": ghost.pid,
        "start_ticks": 1,
        "host": os.uname().nodename,
        "since": time.time(),
        "run": "killed",
    }
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(stat))
    try:
        run = scale("direction=up", "pool=backend", "app_pools_scale_lock_timeout=5")
        assert run.rc == 0, run.output[-3000:]
        assert "recovered the lock" in run.output
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)
        lock.with_name(lock.name + ".guard").unlink(missing_ok=True)  # the recovery's flock file
        assert scale("pool=backend", "replicas=3").rc == 0


def cooldown_held(monitor: MonitorProcess) -> bool:
    return any("cooldown" in decision["limits"] for _, decision in monitor.decisions())


def test_a_monitor_run_queued_behind_a_manual_run_to_8_changes_nothing_and_the_monitor_holds_8(
    engine, stack, tmp_path
):
    before = events_count()
    manual = start_scale("pool=backend", "replicas=8")
    try:
        lock = SCALE_LOCK
        assert wait_for(lock.exists, timeout=30, step=0.05)
        # What the monitor's actuator runs for a 3 -> 4 decision made before the manual run took the lock.
        queued = scale("pool=backend", "replicas=4", "expect_current=3", "trigger=monitor")
        assert manual.wait(timeout=300) == 0, manual.stdout.read()[-3000:]
        assert queued.rc == 0, queued.output[-3000:]
        assert "backend: planned at 3 replicas, the pool has 8 now" in queued.output
        assert_pool(engine, stack, "backend", 8)
        runs = events_since(before)
        [manual_run] = [r for r in runs if r["trigger"] == "manual"]
        [monitor_run] = [r for r in runs if r["trigger"] == "monitor"]
        assert monitor_run["start"] < manual_run["end"]  # it did wait behind the manual run
        # The monitor, with the pool idle at 8: the manual run started its cooldown; nothing is undone in it.
        monitor = MonitorProcess(stack, tmp_path, cooldown_s=60.0, stabilization_window_s=3.0)
        monitor.start()
        try:
            assert wait_for(lambda: cooldown_held(monitor), timeout=60), monitor.log()[-3000:]
        finally:
            monitor.stop()
        backend = [d for _, d in monitor.decisions() if d["pool"] == "backend"]
        assert all(d["desired"] >= 8 for d in backend), backend
        assert_pool(engine, stack, "backend", 8)
    finally:
        if manual.poll() is None:
            manual.wait(timeout=300)
        manual.stdout.close()
        assert scale("pool=backend", "replicas=3").rc == 0


@pytest.mark.long
def test_site_yml_keeps_a_scaled_pool_at_its_size(engine, stack):
    assert scale("pool=frontend", "replicas=4").rc == 0
    try:
        run = playbook("site.yml")
        assert run.rc == 0, run.output[-3000:]
        assert_pool(engine, stack, "frontend", 4)
    finally:
        assert scale("pool=frontend", "replicas=3").rc == 0
    assert_pool(engine, stack, "frontend", 3)


def test_scale_run_under_ansible_runner_is_recorded_as_awx(engine, stack, tmp_path):
    """AWX runs playbooks through ansible-runner, which sets its own callback settings in the environment."""
    import ansible_runner
    import yaml

    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    (private / "project").symlink_to(ROOT)
    (private / "inventory").symlink_to(ROOT / "inventories" / "local")
    extravars = {**yaml.safe_load(STACK_VARS.read_text()), "direction": "up", "pool": "backend"}
    (private / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    envvars = {"JOB_ID": "42", "PATH": ansible_env()["PATH"]}
    (private / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    before = events_count()
    try:
        result = ansible_runner.run(private_data_dir=str(private), playbook="scale.yml", quiet=True)
        assert result.rc == 0, (private / "artifacts").as_posix()
        assert_pool(engine, stack, "backend", 4)
        event = events_since(before)[-1]
        assert event["trigger"] == "awx"
        assert event["result"] == "ok"
        backend = next(p for p in event["pools"] if p["pool"] == "backend")
        assert (backend["current"], backend["target"]) == (3, 4)
    finally:
        assert scale("pool=backend", "replicas=3").rc == 0
