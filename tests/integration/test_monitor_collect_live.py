"""tenfold_monitor.collect against a real container: one backend replica of this test's own stack.

The replica (stack `collecttest`, published on 127.0.0.1:29301) is measured through the real Docker engine
and its real /health; the LB is the session stack's, whose backend pool briefly has this replica as its
only member: real HTTPS requests through it make the LB's counters, which the collector reads from its
GET /status. stub_status points at a closed port, so the snapshot must say the connections are unknown
rather than zero.
The container is removed afterwards, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import docker
import pytest
from conftest import members_restored, put
from helpers import wait_for
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measured_backend(collector: Collector):
    backend = collector.collect(time.time()).pools["backend"]
    return backend if backend.cpu_percent is not None and backend.memory_percent is not None else None


def test_collect_measures_a_real_replica_and_the_lbs_counters_of_what_it_served(replica: None, stack) -> None:
    """Four answers of about 30 ms from the replica, then a 502 from a member nobody listens on."""
    collector = Collector(
        STACK, f"http://127.0.0.1:{stack.status_port}/status", f"http://127.0.0.1:{free_port()}/nginx_status"
    )
    client = stack.client("127.0.0.1")  # not on the allowlist; five requests are far below its limits
    with members_restored(stack, "backend"), contextlib.closing(collector):
        assert put(stack, "backend", [member("active")])[0] == 200
        first = collector.collect(time.time())
        assert first.traffic_state == "warming"  # one sample: nothing to take a difference with yet
        for _ in range(4):
            assert client.get("/api/work?ms=30").status == 200
        closed = {"id": f"{STACK}-backend-9", "address": "127.0.0.1", "port": free_port(), "state": "active"}
        assert put(stack, "backend", [closed])[0] == 200
        assert client.get("/api/work?ms=30").status == 502
        assert put(stack, "backend", [member("active")])[0] == 200
        time.sleep(max(0.0, first.at + 1.2 - time.time()))  # at least a second between the samples
        snap = collector.collect(time.time())
        backend = snap.pools["backend"]
        assert snap.traffic_state == "ok", snap.warnings
        assert (backend.replicas, backend.serving, backend.starting, backend.lb_members) == (1, 1, 0, 1)
        assert backend.inflight == 0
        assert backend.requests == 5 and backend.error_rate == pytest.approx(0.2)
        assert backend.rps == pytest.approx(5 / (snap.at - first.at))
        assert 0.025 < backend.p50_s <= 0.05  # the replicas' ~30 ms, from the LB's histogram
        assert backend.rejected == 0
        assert not any("no stats sample" in w for w in snap.warnings)
        assert snap.pools["frontend"].replicas == 0
        assert snap.lb_active_connections is None and snap.lb_request_rate is None
        assert any("stub_status unreachable" in w for w in snap.warnings)
        assert snap.host_memory_percent is not None and snap.host_memory_percent > 0
        # Stats are read in the background, about a second each; CPU is the difference of two readings,
        # so it comes a collection or two after the replica was first seen.
        measured = wait_for(lambda: measured_backend(collector), timeout=10)
        assert measured and 0 <= measured.cpu_percent <= 100 and 0 < measured.memory_percent < 100
        assert json.loads(snap.to_json())["pools"]["backend"]["inflight"] == 0

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
