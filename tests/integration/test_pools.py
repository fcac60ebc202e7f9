"""The app pools: containers, their limits and hardening, and how the LB spreads and pins requests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import pool_containers

pytestmark = pytest.mark.integration

LIMITS = {"frontend": 512 * 1024**2, "backend": 1024**3}


@pytest.mark.parametrize("pool", ["frontend", "backend"])
def test_each_pool_runs_three_replicas_with_limits_and_hardening(engine, stack, pool):
    containers = pool_containers(engine, stack, pool)
    assert [c.name for c in containers] == [f"{stack.name}-{pool}-{i}" for i in (1, 2, 3)]
    for container in containers:
        host = container.attrs["HostConfig"]
        assert container.status == "running"
        assert host["NanoCpus"] == 1_000_000_000
        assert host["Memory"] == LIMITS[pool]
        assert host["MemoryReservation"] == LIMITS[pool] // 2
        assert host["CpuShares"] == 512
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert host["ReadonlyRootfs"] is True
        assert container.attrs["Config"]["User"] == "10001"
        assert container.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
        assert container.labels["tenfold.pool"] == pool


def test_lb_answers_its_own_health(stack):
    response = stack.client().get("/health")
    assert response.status == 200


def test_frontend_client_keeps_its_instance_over_50_requests(stack):
    client = stack.client(source="127.0.0.5")
    seen = []
    for _ in range(50):
        response = client.get("/whoami")
        assert response.status == 200
        seen.append(response.json())
    assert len({item["instance"] for item in seen}) == 1
    # The per-instance session data grew by one on every request: the same process saw them all.
    assert [item["visits"] for item in seen] == list(range(1, 51))


def test_clients_without_cookies_spread_over_frontend_replicas(stack):
    instances = {stack.client(source=f"127.0.1.{i}").get("/whoami").json()["instance"] for i in range(1, 31)}
    assert len(instances) >= 2


def test_backend_requests_spread_over_all_three_replicas(stack):
    client = stack.client(source="127.0.0.6")
    instances = {client.get("/api/whoami").json()["instance"] for _ in range(15)}
    assert instances == {f"{stack.name}-backend-{i}" for i in (1, 2, 3)}


def test_backend_work_endpoint_answers_through_the_lb(stack):
    response = stack.client(source="127.0.0.7").get("/api/work?ms=50")
    assert response.status == 200
    assert response.json()["ms"] == 50


def test_stub_status_answers_locally(stack):
    from helpers import Client

    response = Client(stack.status_port, tls=False).get("/nginx_status")
    assert response.status == 200
    assert b"Active connections" in response.body


def test_access_log_is_json_with_the_real_client_address_and_upstream(stack):
    marker = f"/api/whoami?marker={time.time_ns()}"
    assert stack.client(source="127.0.0.8").get(marker).status == 200
    log = Path(f"/var/log/tenfold/{stack.name}/access.json.log")
    entry = None
    for _ in range(20):
        lines = [json.loads(line) for line in log.read_text().splitlines() if marker in line]
        if lines:
            entry = lines[-1]
            break
        time.sleep(0.1)
    assert entry is not None
    assert entry["remote_addr"] == "127.0.0.8"
    assert entry["status"] in (200, "200")
    base = stack.vars["app_pools_backend_port_base"]
    backends = {f"127.0.0.1:{base + i}" for i in range(1, 11)}
    assert entry["upstream_addr"].split(",")[0].strip() in backends, entry["upstream_addr"]
    assert entry["pool"] == "backend"
