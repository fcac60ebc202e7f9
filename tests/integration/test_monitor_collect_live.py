"""tenfold_monitor.collect against a real container: one backend replica of this test's own stack.

The replica (stack `collecttest`, published on 127.0.0.1:29301) is measured through the real Docker engine
and its real /health; the LB's members are the session stack's LB's (its members API), the access log is a
file in tmp_path, and stub_status points at a closed port, so the snapshot must say the LB figures are
unknown rather than zero.
The container is removed afterwards, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import members_restored, put
from tenfold_monitor.collect import Collector

pytestmark = pytest.mark.integration

STACK = "collecttest"
IMAGE = "tenfold/backend:local"
PORT = 29301
NAME = f"{STACK}-backend-1"
HEALTHY_WITHIN_S = 60


def remove_stack(engine: docker.DockerClient) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"tenfold.stack={STACK}"}):
        container.remove(force=True)


def wait_healthy(engine: docker.DockerClient) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    status = None
    while time.monotonic() < deadline:
        status = engine.containers.get(NAME).attrs["State"].get("Health", {}).get("Status")
        if status == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(f"{NAME} not healthy within {HEALTHY_WITHIN_S} s: {status}")


@pytest.fixture(scope="module")
def replica(engine: docker.DockerClient) -> Iterator[None]:
    """One backend replica of stack collecttest (`engine` is the session's Docker client, conftest.py)."""
    remove_stack(engine)  # leftovers of an interrupted earlier run
    try:
        engine.containers.run(
            IMAGE,
            name=NAME,
            detach=True,
            labels={"tenfold.stack": STACK, "tenfold.pool": "backend", "tenfold.replica": "1"},
            environment={"INSTANCE_NAME": NAME, "POOL": "backend", "PORT": "8080"},
            ports={"8080/tcp": ("127.0.0.1", PORT)},
            user="10001",
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            nano_cpus=int(1e9),
            mem_limit="512m",
            healthcheck={
                "test": ["CMD", "/usr/local/bin/healthcheck"],
                "interval": 10**9,
                "timeout": 3 * 10**9,
                "retries": 3,
                "start_period": 10**9,
            },
        )
        wait_healthy(engine)
        yield
    finally:
        remove_stack(engine)
        assert not engine.containers.list(all=True, filters={"label": f"tenfold.stack={STACK}"})


def member(state: str) -> dict:
    return {"id": f"{STACK}-backend-1", "address": "127.0.0.1", "port": PORT, "state": state}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nginx_status"


def log_entries(now: float) -> list[dict]:
    base = {"pool": "backend", "request_uri": "/api/whoami", "upstream_addr": f"127.0.0.1:{PORT}"}
    entries = [
        {**base, "msec": now - 1 - i * 0.1, "status": 200, "request_time": 0.002, "upstream_status": "200"}
        for i in range(4)
    ]
    entries.append(
        {**base, "msec": now - 0.5, "status": 502, "request_time": 0.001, "upstream_status": "502"}
    )
    entries.append(
        {"pool": "lb", "msec": now - 0.5, "status": 200, "request_time": 0.0, "request_uri": "/health"}
    )
    return entries


def test_collect_measures_a_real_replica_and_computes_serving_from_the_lb_members(
    replica: None, stack, tmp_path: Path
) -> None:
    """The LB is the session stack's, whose backend pool briefly has this test's replica as its member."""
    log = tmp_path / "access.json.log"
    now = time.time()
    log.write_text("".join(json.dumps(entry) + "\n" for entry in log_entries(now)))
    members_url = f"http://127.0.0.1:{stack.status_port}/members"
    collector = Collector(STACK, log, closed_port_url(), members_url, log_from_start=True)
    with members_restored(stack, "backend"), contextlib.closing(collector):
        assert put(stack, "backend", [member("active")])[0] == 200
        snap = collector.collect(now)
        backend = snap.pools["backend"]
        assert (backend.replicas, backend.serving, backend.starting, backend.lb_members) == (1, 1, 0, 1)
        assert backend.inflight == 0
        assert backend.memory_percent is not None and 0 < backend.memory_percent < 100
        # one-shot stats: the first reading has no previous one to take CPU use against
        assert backend.cpu_percent is None
        assert not any("no stats sample" in w for w in snap.warnings)
        assert backend.requests == 5 and backend.rps == pytest.approx(0.5)
        assert backend.error_rate == pytest.approx(0.2)
        assert snap.log_state == "ok"
        assert snap.pools["frontend"].replicas == 0 and snap.pools["frontend"].rps == 0.0
        assert snap.lb_active_connections is None and snap.lb_request_rate is None
        assert any("stub_status unreachable" in w for w in snap.warnings)
        assert snap.host_memory_percent is not None and snap.host_memory_percent > 0
        assert json.loads(snap.to_json())["pools"]["backend"]["inflight"] == 0

        second = collector.collect(time.time())
        backend = second.pools["backend"]
        assert backend.cpu_percent is not None and 0 <= backend.cpu_percent <= 100
        assert backend.memory_percent is not None and 0 < backend.memory_percent < 100

        # Draining: still the LB's member, not serving, not stranded either.
        assert put(stack, "backend", [member("draining")])[0] == 200
        backend = collector.collect(time.time()).pools["backend"]
        assert (backend.serving, backend.lb_members, backend.unlisted) == (0, 0, 0)

        assert put(stack, "backend", [])[0] == 200  # out of the LB: running and healthy, not serving
        later = collector.collect(time.time())
        backend = later.pools["backend"]
        assert (backend.replicas, backend.serving, backend.starting, backend.lb_members) == (1, 0, 1, 0)
        assert backend.unlisted == 1
        assert backend.cpu_percent is None  # mean over serving replicas: there are none
