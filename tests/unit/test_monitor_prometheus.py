"""The monitor's Prometheus endpoint serves the last collection's figures on loopback."""

from __future__ import annotations

import socket
import urllib.request

import tenfold_policy as policy
from tenfold_monitor.collect import PoolSnapshot, Snapshot
from tenfold_monitor.service import _prometheus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gauges_carry_each_pools_figures_and_the_decision():
    port = free_port()
    update = _prometheus(port)
    pool = PoolSnapshot(
        pool="backend",
        replicas=4,
        serving=3,
        starting=1,
        lb_members=3,
        inflight=7,
        cpu_percent=41.5,
        memory_percent=12.0,
        requests=1200,
        rps=120.0,
        error_rate=0.0,
        p50_s=0.05,
        p95_s=0.21,
        p99_s=0.4,
        rejected=9000,
    )
    snapshot = Snapshot(
        at=1.0,
        stack="promtest",
        host_cpu_percent=55.0,
        host_memory_percent=20.0,
        lb_active_connections=12,
        lb_request_rate=130.0,
        traffic_state="ok",
        window_s=10.0,
        pools={"backend": pool},
    )
    decision = policy.Decision("backend", 4, 6, "up", "test", {"rps": 6}, False, ())
    update(snapshot, [decision])
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'tenfold_pool_replicas{pool="backend",stack="promtest"} 4.0' in body
    assert 'tenfold_pool_desired_replicas{pool="backend",stack="promtest"} 6.0' in body
    assert 'tenfold_pool_requests_per_second{pool="backend",stack="promtest"} 120.0' in body
    assert 'tenfold_pool_rejected_requests{pool="backend",stack="promtest"} 9000.0' in body
    assert 'tenfold_host_cpu_percent{stack="promtest"} 55.0' in body
