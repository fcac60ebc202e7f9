"""Faults on the LB's side under continuous load: a pool with no replica, a broken nginx change, the whole
stack down at once (crashed, or stopped as at an engine restart)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from benchkit.load import Load
from conftest import config_files, pool_containers, snapshot, stack_containers, tree_files
from helpers import assert_lb_error_page, playbook, wait_for

pytestmark = pytest.mark.integration

# Twelve clients off the allowlist, 5 req/s each: the rate limiter (10 req/s per address) lets them be.
LOAD_SOURCES = [f"127.0.6.{i}" for i in range(40, 52)]
FRONTEND_PATHS = ["/", "/whoami", "/static/app.css"]
ALL_PATHS = ["/api/whoami", "/api/work?ms=10", *FRONTEND_PATHS]


def running(engine, stack) -> dict[str, str]:
    """Name -> ID of the stack's running containers."""
    return {c.name: c.id for c in stack_containers(engine, stack.name) if c.status == "running"}


def answers(stack, path: str, source: str = "127.0.0.31") -> int | None:
    try:
        return stack.client(source=source).get(path, timeout=3).status
    except OSError:
        return None


def backend_instances(stack, rounds: int = 12) -> int:
    """Backend replicas that answered a round of /api/whoami; 0 if any request of it failed."""
    client = stack.client(source="127.0.0.9")
    seen = set()
    for _ in range(rounds):
        response = client.get("/api/whoami", timeout=3)
        if response.status != 200:
            return 0
        seen.add(response.json()["instance"])
    return len(seen)


def in_parallel(action, containers) -> None:
    with ThreadPoolExecutor(max_workers=max(len(containers), 1)) as pool:
        list(pool.map(action, containers))


def test_a_pool_without_replicas_gets_a_clear_502_with_headers_and_recovers_by_itself(engine, stack, figures):
    backends = pool_containers(engine, stack, "backend")
    assert len(backends) == 3
    with Load(
        stack.https_port, FRONTEND_PATHS, rate=60, workers=12, sources=LOAD_SOURCES, max_seconds=120
    ) as load:
        try:
            in_parallel(lambda c: c.stop(timeout=5), backends)
            started = time.monotonic()
            response = stack.client(source="127.0.0.31").get("/api/whoami", timeout=10)
            answered_in = time.monotonic() - started
            assert_lb_error_page(response, 502, "Bad Gateway")
        finally:
            in_parallel(lambda c: c.start(), backends)
        # Each nginx worker keeps its own view of failed servers: recovered means every request of a round
        # answered, by every replica (allowlisted prober, so the rate limiter does not count it).
        restarted = time.monotonic()
        assert wait_for(lambda: answers(stack, "/api/whoami", source="127.0.0.9") == 200, 60, step=0.25), (
            "the backend pool did not serve again within 60 s of its replicas' start"
        )
        first = time.monotonic() - restarted
        assert wait_for(lambda: backend_instances(stack) == 3, 60, step=0.25), (
            "not every request is served by the backend pool again"
        )
        every = time.monotonic() - restarted
        time.sleep(1)
    # The frontend pool never noticed.
    assert load.tally.failed == 0, dict(load.tally.failures)
    figures.record(
        "Faults", "every backend replica stopped: error page answered in", round(answered_in, 3), "s"
    )
    figures.record("Faults", "every backend replica stopped: status", response.status)
    figures.record(
        "Faults",
        "every backend replica stopped: first / every request served again after their start",
        f"{first:.1f} / {every:.1f}",
        "s",
        note="nginx tries a failed server again after fail_timeout (10 s); each worker keeps its own view",
    )
    figures.record("Faults", "frontend requests failed meanwhile", load.tally.failed, f"of {load.tally.sent}")


@pytest.mark.long
def test_a_broken_nginx_change_fails_with_nginxs_error_while_the_lb_serves_the_old_config(
    engine, stack, figures
):
    live = Path(f"/etc/tenfold/{stack.name}/nginx")
    before = snapshot(engine, stack)
    with Load(
        stack.https_port, ALL_PATHS, rate=60, workers=12, sources=LOAD_SOURCES, max_seconds=300
    ) as load:
        # A value the role's own checks let through and nginx refuses: only nginx -t can catch it.
        run = playbook("site.yml", "-e", '{"nginx_lb_ssl_ciphers": ["NO-SUCH-CIPHER"]}')
        time.sleep(1)
    assert run.rc != 0
    assert "nginx: [emerg] SSL_CTX_set_cipher_list" in run.output, run.output[-3000:]
    assert snapshot(engine, stack) == before
    # Staging holds the live files again, not the rejected render: the next run compares against what is live.
    staging = Path(f"/etc/tenfold/{stack.name}/nginx-staging")
    assert tree_files(staging) == tree_files(live)
    assert load.tally.failed == 0, dict(load.tally.failures)
    assert load.tally.by_path["/api/whoami"] > 0 and load.tally.by_path["/"] > 0
    figures.record(
        "Faults", "broken nginx change: requests failed", load.tally.failed, f"of {load.tally.sent}"
    )


@pytest.mark.long
def test_the_whole_stack_killed_at_once_comes_back_by_its_restart_policy(engine, stack, figures):
    files = config_files(stack)
    before = running(engine, stack)
    assert len(before) == 7
    pids = [engine.containers.get(cid).attrs["State"]["Pid"] for cid in before.values()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # a crash of every container, not a `docker stop`
    killed = time.monotonic()
    assert wait_for(
        lambda: (
            answers(stack, "/health") == 200
            and answers(stack, "/api/whoami") == 200
            and answers(stack, "/whoami") == 200
        ),
        timeout=90,
        step=0.25,
    ), "the stack did not serve again within 90 s of the crash"
    serving = time.monotonic() - killed
    assert wait_for(lambda: running(engine, stack) == before, timeout=60, step=0.25), (
        f"not the same containers running: {running(engine, stack)} vs {before}"
    )
    restarts = {c.name: c.attrs["RestartCount"] for c in stack_containers(engine, stack.name)}
    assert all(count >= 1 for count in restarts.values()), restarts
    assert config_files(stack) == files
    # and a converge finds nothing to do
    run = playbook("site.yml")
    assert run.rc == 0 and run.changed == 0, run.output[-4000:]
    figures.record("Faults", "whole stack killed (kill -9): serving again after", round(serving, 1), "s")


@pytest.mark.long
def test_the_whole_stack_stopped_at_once_comes_back_with_site_yml_and_nothing_is_lost(engine, stack, figures):
    run = playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=4")
    assert run.rc == 0, run.output[-4000:]
    try:
        files = config_files(stack)
        before = running(engine, stack)
        assert len(before) == 8
        log = Path(f"/var/log/tenfold/{stack.name}/access.json.log")
        logged = log.stat().st_size
        client = stack.client(source="127.0.3.200")
        home = client.get("/whoami").json()["instance"]

        # As at an engine restart: every container stopped together.
        in_parallel(lambda c: c.stop(timeout=10), stack_containers(engine, stack.name))
        assert running(engine, stack) == {}
        assert answers(stack, "/health") is None

        started = time.monotonic()
        run = playbook("site.yml")
        took = time.monotonic() - started
        assert run.rc == 0, run.output[-4000:]
        # The same containers (started again, not replaced), the scaled size kept, the same files.
        assert running(engine, stack) == before
        assert config_files(stack) == files
        assert log.stat().st_size >= logged
        assert client.get("/whoami").json()["instance"] == home
        backends = {
            stack.client(source="127.0.0.32").get("/api/whoami").json()["instance"] for _ in range(12)
        }
        assert len(backends) == 4
    finally:
        down = playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
        assert down.rc == 0, down.output[-4000:]
    figures.record("Faults", "whole stack stopped: site.yml brought it back in", round(took, 1), "s")


def test_logs_rotated_and_reopened_twice_keep_the_lb_validating_restarting_and_logging(engine, stack):
    logs = Path(f"/var/log/tenfold/{stack.name}")
    lb = engine.containers.get(f"{stack.name}-lb")
    conf = "/etc/tenfold-nginx/nginx.conf"
    for generation in (1, 2):
        # As logrotate does: rename, then SIGUSR1 (nginx reopens its logs and hands them to its worker user).
        for name in ("access.json.log", "error.log"):
            (logs / name).rename(logs / f"{name}.{generation}")
        lb.kill(signal="SIGUSR1")
        assert wait_for(lambda: (logs / "error.log").exists(), timeout=10)
        assert answers(stack, "/health", source="127.0.0.9") == 200
        assert wait_for(lambda: (logs / "access.json.log").exists(), timeout=10)
        check = lb.exec_run(["nginx", "-t", "-q", "-c", conf])
        assert check.exit_code == 0, check.output.decode()
    lb.restart(timeout=10)
    assert wait_for(lambda: answers(stack, "/api/whoami", source="127.0.0.9") == 200, timeout=30)
    lb.reload()
    assert lb.status == "running" and lb.attrs["RestartCount"] == 0
    size = (logs / "access.json.log").stat().st_size
    assert answers(stack, "/health", source="127.0.0.9") == 200
    assert wait_for(lambda: (logs / "access.json.log").stat().st_size > size, timeout=10)
