"""The app_pools role runs each pool's replicas, hardened and limited, each answering its health check."""

import json

import pytest

STACK = "molapps"
POOLS = {"frontend": (27300, 512 * 1024**2), "backend": (27400, 1024**3)}


def inspect(host, name):
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


@pytest.mark.parametrize("pool", sorted(POOLS))
@pytest.mark.parametrize("index", [1, 2])
def test_replica_runs_limited_and_hardened(host, pool, index):
    port_base, memory = POOLS[pool]
    info = inspect(host, f"{STACK}-{pool}-{index}")
    assert info["State"]["Running"]
    assert info["Config"]["Labels"]["tenfold.pool"] == pool
    assert info["Config"]["Labels"]["tenfold.stack"] == STACK
    assert info["HostConfig"]["Memory"] == memory
    assert info["HostConfig"]["MemoryReservation"] == memory // 2
    assert info["HostConfig"]["NanoCpus"] == 10**9
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["Config"]["User"] == "10001"
    body = json.loads(host.check_output(f"curl -fsS http://127.0.0.1:{port_base + index}/health"))
    assert body["status"] == "ok"
    assert body["instance"] == f"{STACK}-{pool}-{index}"


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_each_pool_keeps_a_warm_replica_ready_above_its_serving_ones(host, pool):
    port_base, memory = POOLS[pool]
    info = inspect(host, f"{STACK}-{pool}-3-warm")
    assert info["State"]["Running"]
    assert info["Config"]["Labels"]["tenfold.replica"] == "3"
    assert info["HostConfig"]["Memory"] == memory
    body = json.loads(host.check_output(f"curl -fsS http://127.0.0.1:{port_base + 3}/health"))
    assert body["instance"] == f"{STACK}-{pool}-3"  # the name it serves under once promoted


def test_pools_network_exists(host):
    assert host.run(f"docker network inspect {STACK}-apps").rc == 0


def test_no_third_serving_replica(host):
    assert host.run(f"docker inspect {STACK}-backend-3").rc != 0
