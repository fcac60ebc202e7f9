"""scale.yml on the real stack: under continuous load, adding and removing replicas fails no request."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import stack_containers
from helpers import BIN, EVENTS_LOG, ROOT, STACK_VARS, ansible_env, playbook
from load import Load

pytestmark = pytest.mark.integration

EVENTS = EVENTS_LOG
LOAD_SOURCES = [f"127.0.2.{i}" for i in range(1, 13)]
LOAD_PATHS = ["/api/work?ms=20", "/whoami", "/api/whoami", "/"]


def scale(*extra: str):
    return playbook("scale.yml", *(arg for pair in extra for arg in ("-e", pair)))


def replicas(engine, stack, pool: str) -> list[int]:
    found = [c for c in stack_containers(engine, stack.name) if c.labels.get("tenfold.pool") == pool]
    return sorted(int(c.labels["tenfold.replica"]) for c in found)


def members(stack, pool: str) -> list[int]:
    """Ports of the servers of the pool's upstream in the live nginx config (not backups, not down)."""
    text = Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_text()
    block = re.search(rf"upstream tenfold_{pool} \{{(.*?)\}}", text, re.S).group(1)
    ports = []
    for line in block.splitlines():
        match = re.match(r"\s*server [\d.]+:(\d+)(.*);", line)
        if match and "backup" not in match.group(2) and " down" not in match.group(2):
            ports.append(int(match.group(1)))
    return sorted(ports)


def events_since(count: int) -> list[dict]:
    lines = EVENTS.read_text().splitlines() if EVENTS.exists() else []
    return [json.loads(line) for line in lines[count:]]


def event_count() -> int:
    return len(EVENTS.read_text().splitlines()) if EVENTS.exists() else 0


def port_base(stack, pool: str) -> int:
    return stack.vars[f"app_pools_{pool}_port_base"]


def assert_pool(engine, stack, pool: str, count: int) -> None:
    assert replicas(engine, stack, pool) == list(range(1, count + 1))
    assert members(stack, pool) == [port_base(stack, pool) + i for i in range(1, count + 1)]


def instances_of(clients) -> list[str]:
    return [client.get("/whoami").json()["instance"] for client in clients]


def test_scaling_under_load_fails_no_request_and_keeps_sessions(engine, stack):
    before = event_count()
    sticky = [stack.client(source=f"127.0.3.{i}") for i in range(1, 13)]
    with Load(
        stack.https_port, LOAD_PATHS, rate=120, workers=12, sources=LOAD_SOURCES, max_seconds=400
    ) as load:
        homes = instances_of(sticky)
        assert len(set(homes)) >= 2, "the sticky clients should start spread over the frontend replicas"

        run = scale("pool=backend", "replicas=10")
        assert run.rc == 0, run.output[-4000:]
        assert_pool(engine, stack, "backend", 10)

        run = scale("pool=backend", "replicas=3")
        assert run.rc == 0, run.output[-4000:]
        assert_pool(engine, stack, "backend", 3)

        run = scale("direction=up", "pool=frontend")
        assert run.rc == 0, run.output[-4000:]
        assert_pool(engine, stack, "frontend", 4)
        # Adding a replica moves no client off its replica.
        assert instances_of(sticky) == homes
        newcomers = [stack.client(source=f"127.0.4.{i}") for i in range(1, 31)]
        newcomer_homes = instances_of(newcomers)

        run = scale("direction=down", "pool=frontend")
        assert run.rc == 0, run.output[-4000:]
        assert_pool(engine, stack, "frontend", 3)
        # Removing replica 4 moves only the clients it served.
        assert instances_of(sticky) == homes
        survivors = [(c, h) for c, h in zip(newcomers, newcomer_homes, strict=True) if not h.endswith("-4")]
        assert instances_of([c for c, _ in survivors]) == [h for _, h in survivors]
        time.sleep(2)

    tally = load.tally
    assert tally.failed == 0, dict(tally.failures)
    assert load.rate >= 100, f"{load.rate:.0f} req/s"
    assert tally.by_path["/api/work"] > 0 and tally.by_path["/whoami"] > 0
    print(f"\nload: {tally.sent} requests at {load.rate:.0f}/s, keep-alive retries {tally.keepalive_retries}")

    recorded = events_since(before)
    assert [e["result"] for e in recorded] == ["ok"] * 4
    backend_up = next(p for p in recorded[0]["pools"] if p["pool"] == "backend")
    assert (backend_up["current"], backend_up["target"], backend_up["direction"]) == (3, 10, "up")
    assert recorded[0]["trigger"] == "manual"
    assert all(e["stack"] == stack.name and e["duration_s"] > 0 for e in recorded)


def test_replicas_that_never_become_healthy_are_removed_and_nothing_changes(engine, stack):
    upstreams = Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_bytes()
    before = event_count()
    with Load(
        stack.https_port, LOAD_PATHS, rate=60, workers=6, sources=LOAD_SOURCES, max_seconds=120
    ) as load:
        run = scale(
            "pool=backend", "replicas=5", "app_pools_health_path=/never-healthy", "app_pools_health_timeout=3"
        )
    assert run.rc != 0
    assert "never became healthy" in run.output
    assert_pool(engine, stack, "backend", 3)
    assert Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_bytes() == upstreams
    assert load.tally.failed == 0, dict(load.tally.failures)
    event = events_since(before)[-1]
    assert event["result"] == "failed"
    assert "Reconcile" in event["failed_task"]


def test_scale_run_whose_nginx_config_fails_validation_puts_the_pools_back(engine, stack):
    upstreams = Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_bytes()
    before = event_count()
    load = Load(stack.https_port, LOAD_PATHS, rate=60, workers=6, sources=LOAD_SOURCES, max_seconds=120)
    with load:
        run = scale("pool=backend", "replicas=5", "nginx_lb_upstream_fail_timeout=bogus")
    assert run.rc != 0
    assert 'nginx: [emerg] invalid parameter "fail_timeout=bogus"' in run.output
    assert_pool(engine, stack, "backend", 3)
    assert Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_bytes() == upstreams
    assert load.tally.failed == 0, dict(load.tally.failures)
    event = events_since(before)[-1]
    assert event["result"] == "failed"
    assert "nginx: [emerg]" in event["error"]
    # The lock was given back: the next run does not wait for it, nor recover it.
    run = scale("direction=up", "pool=backend")
    assert run.rc == 0 and "recovered the lock" not in run.output
    assert scale("pool=backend", "replicas=3").rc == 0


def test_scale_check_diff_shows_the_change_and_changes_nothing(engine, stack):
    containers = {c.name: c.id for c in stack_containers(engine, stack.name)}
    config = Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_bytes()
    before = event_count()
    run = playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=5", "--check", "--diff")
    assert run.rc == 0, run.output[-3000:]
    backend_5 = port_base(stack, "backend") + 5
    assert f"+    server 127.0.0.1:{backend_5} " in run.output
    assert f"+{stack.name}-backend-5" in run.output
    assert {c.name: c.id for c in stack_containers(engine, stack.name)} == containers
    assert Path(f"/etc/tenfold/{stack.name}/nginx/upstreams.conf").read_bytes() == config
    assert event_count() == before


def test_request_beyond_the_bounds_is_clamped_and_says_so(engine, stack):
    run = scale("direction=down", "pool=backend")
    assert run.rc == 0, run.output[-3000:]
    assert "clamped to the minimum of 3" in run.output
    assert_pool(engine, stack, "backend", 3)


def test_two_concurrent_scale_runs_do_not_interleave(engine, stack):
    before = event_count()
    env = ansible_env()

    def start(*extra: str) -> subprocess.Popen:
        args = [str(BIN / "ansible-playbook"), "scale.yml", "-e", f"@{STACK_VARS}"]
        args += [arg for pair in extra for arg in ("-e", pair)]
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    first = start("pool=backend", "replicas=5")
    time.sleep(1.5)
    second = start("direction=up", "pool=backend")
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
    lock = ROOT / "logs" / f"scale-{stack.name}.lock"
    ghost = subprocess.Popen(["sleep", "0"])
    ghost.wait()
    stat = {
        "pid": ghost.pid,
        "start_ticks": 1,
        "host": os.uname().nodename,
        "since": time.time(),
        "run": "killed",
    }
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps(stat))
    try:
        run = scale("direction=up", "pool=backend", "app_pools_scale_lock_timeout=5")
        assert run.rc == 0, run.output[-3000:]
        assert "recovered the lock" in run.output
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)
        assert scale("pool=backend", "replicas=3").rc == 0


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
    envvars = {"TENFOLD_SCALE_EVENTS_LOG": str(EVENTS), "JOB_ID": "42", "PATH": ansible_env()["PATH"]}
    (private / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    before = event_count()
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
