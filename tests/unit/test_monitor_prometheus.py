"""The monitor's Prometheus endpoint: Prometheus' names and types, and no series for an unknown figure."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import policy
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tenfold_monitor.collect import PoolSnapshot, Snapshot
from tenfold_monitor.prometheus import Exporter

POOL = PoolSnapshot(
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
    warm=1,
)
SNAPSHOT = Snapshot(
    at=1_700_000_000.0,
    stack="promtest",
    host_cpu_percent=55.0,
    host_memory_percent=20.0,
    lb_active_connections=12,
    lb_request_rate=130.0,
    traffic_state="ok",
    window_s=10.0,
    pools={"backend": POOL},
)
DECISION = policy.Decision("backend", 4, 6, "up", "test", {"rps": 6}, False, ())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(exporter: Exporter) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(exporter.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(exporter: Exporter, name: str, **labels: str) -> float | None:
    return samples(exporter).get((name, frozenset({"stack": "promtest", **labels}.items())))


@pytest.fixture
def exporter():
    exporter = Exporter("promtest", ["backend"])
    yield exporter
    exporter.close()


def test_every_family_has_help_and_type_and_follows_the_naming_guidelines(exporter):
    exporter.update(SNAPSHOT, [DECISION])
    text = generate_latest(exporter.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith("tenfold_")}
    for name, family in families.items():
        assert f"# HELP {name}" in text and f"# TYPE {name}" in text
        assert family.type in ("gauge", "counter"), name
        assert "percent" not in name and "per_second" not in name, name  # ratios and rate() instead
    counters = {name for name, f in families.items() if f.type == "counter"}
    assert counters == {"tenfold_monitor_scale_runs", "tenfold_monitor_promotions"}  # served with _total
    assert "tenfold_monitor_scale_runs_total" in text and "tenfold_monitor_promotions_total" in text


def test_shares_of_a_limit_are_ratios_from_0_to_1(exporter):
    exporter.update(SNAPSHOT, [DECISION])
    assert value(exporter, "tenfold_pool_cpu_usage_ratio", pool="backend") == pytest.approx(0.415)
    assert value(exporter, "tenfold_pool_memory_usage_ratio", pool="backend") == pytest.approx(0.12)
    assert value(exporter, "tenfold_host_cpu_usage_ratio") == pytest.approx(0.55)
    assert value(exporter, "tenfold_host_memory_usage_ratio") == pytest.approx(0.20)
    assert value(exporter, "tenfold_pool_replicas", pool="backend") == 4
    assert value(exporter, "tenfold_pool_warm_replicas", pool="backend") == 1
    assert value(exporter, "tenfold_pool_desired_replicas", pool="backend") == 6
    assert value(exporter, "tenfold_monitor_traffic_fresh") == 1
    assert value(exporter, "tenfold_monitor_traffic_state", state="ok") == 1
    assert value(exporter, "tenfold_monitor_traffic_state", state="unreachable") == 0
    assert value(exporter, "tenfold_monitor_last_collection_timestamp_seconds") == SNAPSHOT.at


def test_traffic_is_left_to_the_lbs_own_counters(exporter):
    exporter.update(SNAPSHOT, [DECISION])
    names = {name for name, _ in samples(exporter)}
    assert not [n for n in names if "request" in n or "latency" in n or "error" in n]


def test_a_figure_that_becomes_unknown_loses_its_series(exporter):
    exporter.update(SNAPSHOT, [DECISION])
    docker_gone = dataclasses.replace(
        POOL, replicas=None, serving=None, warm=None, cpu_percent=None, memory_percent=None
    )
    unknown = dataclasses.replace(
        SNAPSHOT, host_cpu_percent=None, traffic_state="unreachable", pools={"backend": docker_gone}
    )
    exporter.update(unknown, [])
    for name in (
        "tenfold_pool_replicas",
        "tenfold_pool_serving_replicas",
        "tenfold_pool_warm_replicas",
        "tenfold_pool_desired_replicas",
        "tenfold_pool_cpu_usage_ratio",
        "tenfold_pool_memory_usage_ratio",
    ):
        assert value(exporter, name, pool="backend") is None, name
    assert value(exporter, "tenfold_host_cpu_usage_ratio") is None
    assert value(exporter, "tenfold_host_memory_usage_ratio") == pytest.approx(0.20)  # still known
    assert value(exporter, "tenfold_monitor_traffic_fresh") == 0
    exporter.update(SNAPSHOT, [DECISION])  # known again: back
    assert value(exporter, "tenfold_pool_cpu_usage_ratio", pool="backend") == pytest.approx(0.415)


def test_a_pool_no_longer_seen_loses_its_series(exporter):
    frontend = dataclasses.replace(POOL, pool="frontend")
    exporter.update(dataclasses.replace(SNAPSHOT, pools={"backend": POOL, "frontend": frontend}), [])
    assert value(exporter, "tenfold_pool_replicas", pool="frontend") == 4
    exporter.update(SNAPSHOT, [DECISION])
    assert value(exporter, "tenfold_pool_replicas", pool="frontend") is None
    assert value(exporter, "tenfold_pool_replicas", pool="backend") == 4


def test_scale_runs_and_promotions_are_counted_by_result_from_zero(exporter):
    assert value(exporter, "tenfold_monitor_scale_runs_total", pool="backend", result="ok") == 0
    assert value(exporter, "tenfold_monitor_promotions_total", pool="backend", result="failed") == 0
    exporter.scale_run_finished("backend", ok=True)
    exporter.scale_run_finished("backend", ok=True)
    exporter.scale_run_finished("backend", ok=False)
    exporter.promotion("backend", "ok")
    exporter.promotion("backend", "skipped")  # nothing was tried: not counted
    assert value(exporter, "tenfold_monitor_scale_runs_total", pool="backend", result="ok") == 2
    assert value(exporter, "tenfold_monitor_scale_runs_total", pool="backend", result="failed") == 1
    assert value(exporter, "tenfold_monitor_promotions_total", pool="backend", result="ok") == 1
    assert value(exporter, "tenfold_monitor_promotions_total", pool="backend", result="failed") == 0


def test_the_endpoint_serves_the_registry_on_loopback():
    port = free_port()
    exporter = Exporter("promtest", ["backend"], port)
    try:
        exporter.update(SNAPSHOT, [DECISION])
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        exporter.close()
    assert 'tenfold_pool_desired_replicas{pool="backend",stack="promtest"} 6.0' in body
    assert "# TYPE tenfold_monitor_scale_runs_total counter" in body
    with pytest.raises(OSError):  # closed: the port is free again
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
