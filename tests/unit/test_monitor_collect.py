"""tenfold_monitor's collectors: traffic window, stub_status, container figures, LB members, the snapshot."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest
from tenfold_monitor import containers as ct
from tenfold_monitor import stubstatus
from tenfold_monitor.collect import Collector, log_state, pool_snapshot
from tenfold_monitor.containers import ContainerMetrics
from tenfold_monitor.lbmembers import (
    LbMember,
    active_endpoints,
    endpoints,
    member_key,
    parse_members,
    read_members,
)
from tenfold_monitor.window import TrafficWindow, is_failure, nearest_rank, request_of, upstream_statuses

NOW = 1_795_782_000.0


def entry(
    at: float,
    pool: str = "backend",
    status: int = 200,
    rt: float = 0.01,
    upstream: str = "200",
    request_time: float | None = None,
) -> dict:
    """An access-log entry as the LB writes it; `upstream=""` is a request no replica was asked for."""
    return {
        "msec": at,
        "pool": pool,
        "status": status,
        "request_time": rt if request_time is None else request_time,
        "upstream_addr": "127.0.0.1:28201" if upstream else "",
        "upstream_status": upstream,
        "upstream_response_time": str(rt) if upstream else "",
        "request_uri": "/api/whoami",
    }


# --- window: rate, errors, percentiles -------------------------------------------------------------
def test_rps_is_requests_in_the_window_over_its_length():
    window = TrafficWindow(window_s=10)
    window.add(entry(NOW - 9.5 + i * 0.1) for i in range(50))
    traffic = window.snapshot(NOW)["backend"]
    assert traffic.requests == 50
    assert traffic.rps == pytest.approx(5.0)
    assert traffic.span_s == 10


def test_the_window_length_is_configurable():
    window = TrafficWindow(window_s=2)
    window.add([entry(NOW - 3), entry(NOW - 1.5), entry(NOW - 0.5)])
    traffic = window.snapshot(NOW)["backend"]
    assert traffic.requests == 2
    assert traffic.rps == pytest.approx(1.0)


def test_entries_older_than_the_window_are_evicted_by_their_own_time():
    window = TrafficWindow(window_s=10)
    window.add([entry(NOW - 12), entry(NOW - 10), entry(NOW - 9.99), entry(NOW - 1)])
    assert window.snapshot(NOW)["backend"].requests == 2
    assert window.snapshot(NOW + 5)["backend"].requests == 1
    assert window.snapshot(NOW + 9.5)["backend"].requests == 0


def test_entries_arriving_out_of_order_are_placed_by_their_time():
    window = TrafficWindow(window_s=10)
    window.add([entry(NOW - 1), entry(NOW - 11), entry(NOW - 2)])  # two workers' buffers interleaved
    traffic = window.snapshot(NOW)["backend"]
    assert traffic.requests == 2
    assert traffic.samples_at == NOW - 1


def test_error_rate_counts_5xx_answers_and_upstream_failures():
    window = TrafficWindow(window_s=10)
    window.add(
        [
            entry(NOW - 1, status=200),
            entry(NOW - 1, status=500, upstream="500"),
            entry(NOW - 1, status=502, upstream=""),  # no upstream answered at all
            entry(NOW - 1, status=504, upstream="504"),
            entry(NOW - 1, status=200, upstream="502, 200"),  # a failed try, retried on the next server
            entry(NOW - 1, status=200, upstream="504 : 200"),
            entry(NOW - 1, status=404, upstream="404"),
            entry(NOW - 1, status=429, upstream=""),  # rate-limited by the LB: rejected, not demand
        ]
    )
    traffic = window.snapshot(NOW)["backend"]
    assert traffic.errors == 5
    assert traffic.requests == 7
    assert traffic.error_rate == pytest.approx(5 / 7)
    assert traffic.rejected == 1


@pytest.mark.parametrize("status", [408, 413, 429, 444])
def test_requests_the_lb_rejected_are_counted_apart_and_are_no_demand(status):
    window = TrafficWindow(window_s=10)
    window.add(entry(NOW - 1, status=status, upstream="", request_time=10.0) for _ in range(500))
    window.add(entry(NOW - 1) for _ in range(20))
    traffic = window.snapshot(NOW)["backend"]
    assert (traffic.requests, traffic.rejected, traffic.errors) == (20, 500, 0)
    assert traffic.rps == pytest.approx(2.0)
    assert traffic.p95_s == pytest.approx(0.01)  # the clients' 10 s do not count


def test_other_answers_of_the_lb_itself_are_neither_demand_nor_rejected():
    window = TrafficWindow(window_s=10)
    window.add([entry(NOW - 1, status=400, upstream=""), entry(NOW - 1, status=301, upstream="")])
    traffic = window.snapshot(NOW)["backend"]
    assert (traffic.requests, traffic.rejected) == (0, 0)


def test_latency_is_the_replicas_time_not_the_clients():
    window = TrafficWindow(window_s=10)
    # A slow upload: 12 s for the client, 20 ms on the replica.
    window.add([entry(NOW - 1, rt=0.02, request_time=12.0)])
    assert window.snapshot(NOW)["backend"].p95_s == pytest.approx(0.02)


def test_upstream_time_of_a_retried_request_is_the_sum_of_its_tries():
    request = request_of(
        {
            "msec": NOW,
            "pool": "backend",
            "status": 200,
            "upstream_addr": "127.0.0.1:1, 127.0.0.1:2",
            "upstream_status": "502, 200",
            "upstream_response_time": "0.004, 0.030",
        }
    )
    assert request is not None and request.upstream_time == pytest.approx(0.034)


def test_failure_rules():
    assert is_failure(503, "")
    assert is_failure(200, "502, 200")
    assert not is_failure(200, "200")
    assert not is_failure(499, "-")
    assert not is_failure(None, None)
    assert upstream_statuses("502, 504 : 200") == [502, 504, 200]
    assert upstream_statuses("-") == []


def test_percentiles_are_nearest_rank_of_upstream_response_time():
    window = TrafficWindow(window_s=10)
    window.add(entry(NOW - 1, rt=n / 1000) for n in range(100, 0, -1))  # 0.001 .. 0.100 s, any order
    traffic = window.snapshot(NOW)["backend"]
    assert traffic.p50_s == pytest.approx(0.050)
    assert traffic.p95_s == pytest.approx(0.095)
    assert traffic.p99_s == pytest.approx(0.099)


def test_nearest_rank():
    assert nearest_rank([1.0], 99) == 1.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert nearest_rank([], 50) is None


def test_the_lbs_own_requests_and_unusable_entries_are_left_out():
    window = TrafficWindow(window_s=10)
    kept = window.add(
        [
            entry(NOW - 1, pool="lb"),
            entry(NOW - 1, pool=""),
            {"pool": "backend", "status": 200},  # no msec
            {"msec": "soon", "pool": "backend"},
            entry(NOW - 1, pool="frontend"),
        ]
    )
    assert kept == 1
    assert window.ignored == 4
    assert set(window.snapshot(NOW)) == {"frontend"}


def test_an_idle_pool_is_a_real_zero_with_no_latency():
    window = TrafficWindow(window_s=10)
    window.add([entry(NOW - 30)])
    snapshot = window.snapshot(NOW, pools=["frontend", "backend"])
    for pool in ("frontend", "backend"):
        assert snapshot[pool].rps == 0.0
        assert snapshot[pool].requests == 0
        assert snapshot[pool].error_rate == 0.0
        assert snapshot[pool].p50_s is None and snapshot[pool].samples_at is None


def test_while_the_window_fills_the_rate_is_over_the_time_covered():
    window = TrafficWindow(window_s=10, since=NOW - 2)
    window.add(entry(NOW - 1.5 + i * 0.1) for i in range(10))
    traffic = window.snapshot(NOW)["backend"]
    assert traffic.span_s == pytest.approx(2)
    assert traffic.rps == pytest.approx(5.0)
    assert TrafficWindow(window_s=10, since=NOW).snapshot(NOW, ["backend"])["backend"].rps is None


def test_request_of_reads_numbers_written_as_strings():
    request = request_of(
        {
            "msec": "1795782003.265",
            "pool": "frontend",
            "status": "502",
            "upstream_addr": "127.0.0.1:28101",
            "upstream_response_time": "0.2",
        }
    )
    assert request is not None
    assert (request.at, request.upstream_time, request.failed) == (1795782003.265, 0.2, True)


# --- the log's state: idle versus missing -------------------------------------------------------------
def test_a_missing_log_means_unknown_traffic():
    state, warning = log_state(available=False, covered_s=10, quiet_s=0, unlogged_rps=0.0)
    assert state == "missing" and warning


def test_a_quiet_log_with_a_quiet_nginx_is_idle():
    assert log_state(available=True, covered_s=10, quiet_s=60, unlogged_rps=0.1) == ("ok", None)


def test_a_quiet_log_while_nginx_serves_requests_is_stale():
    state, warning = log_state(available=True, covered_s=10, quiet_s=60, unlogged_rps=250.0)
    assert state == "stale" and warning and "stale" in warning


def test_a_quiet_log_without_stub_status_cannot_be_called_idle():
    state, _ = log_state(available=True, covered_s=10, quiet_s=60, unlogged_rps=None)
    assert state == "unverified"


def test_a_log_that_just_had_lines_is_current_without_stub_status():
    assert log_state(available=True, covered_s=10, quiet_s=2, unlogged_rps=None) == ("ok", None)


def test_no_rate_before_the_window_covers_a_second():
    assert log_state(available=True, covered_s=0.0, quiet_s=0, unlogged_rps=None)[0] == "warming"


# --- stub_status ------------------------------------------------------------------------------------
STUB = (
    "Active connections: 291 \n"
    "server accepts handled requests\n"
    " 16630948 16630947 31070465 \n"
    "Reading: 6 Writing: 179 Waiting: 106 \n"
)


def test_stub_status_is_parsed():
    status = stubstatus.parse(STUB)
    assert status == stubstatus.StubStatus(291, 16630948, 16630947, 31070465, 6, 179, 106)


def test_stub_status_that_is_not_one_is_an_error():
    with pytest.raises(ValueError):
        stubstatus.parse("<html>502 Bad Gateway</html>")


def test_request_rate_from_two_samples():
    first = stubstatus.parse(STUB)
    second = stubstatus.StubStatus(10, 0, 0, first.requests + 500, 0, 0, 0)
    assert stubstatus.request_rate(first, second, 2.0) == pytest.approx(250.0)


def test_request_rate_is_unknown_after_a_restart_or_without_elapsed_time():
    first = stubstatus.parse(STUB)
    restarted = stubstatus.StubStatus(1, 1, 1, 3, 0, 1, 0)
    assert stubstatus.request_rate(first, restarted, 1.0) is None
    assert stubstatus.request_rate(first, first, 0.0) is None


# --- CPU and memory of a container ------------------------------------------------------------------
def stats(total: int, pre_total: int | None, system: int, pre_system: int | None, cpus: int = 4) -> dict:
    pre: dict = {}
    if pre_total is not None:
        pre = {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system}
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": cpus},
        "precpu_stats": pre,
    }


def test_cpu_percent_of_the_limit():
    # 0.5 s of CPU in 4 s of host time (1 s wall on 4 CPUs): half a core; limit 1 CPU → 50 %, 0.5 CPU → 100 %.
    sample = stats(1_500_000_000, 1_000_000_000, 8_000_000_000, 4_000_000_000)
    assert ct.cpu_percent_of_limit(sample, 1.0) == pytest.approx(50.0)
    assert ct.cpu_percent_of_limit(sample, 0.5) == pytest.approx(100.0)


def test_cpu_percent_without_a_limit_is_of_all_online_cpus():
    sample = stats(1_500_000_000, 1_000_000_000, 8_000_000_000, 4_000_000_000, cpus=4)
    assert ct.cpu_percent_of_limit(sample, None) == pytest.approx(12.5)


def test_cpu_percent_is_unknown_without_a_previous_reading():
    assert ct.cpu_percent_of_limit(stats(1_000, None, 5_000, None), 1.0) is None
    assert ct.cpu_percent_of_limit(stats(1_000, 1_000, 5_000, 5_000), 1.0) is None  # no time passed
    assert ct.cpu_percent_of_limit({}, 1.0) is None


def test_a_one_shot_reading_takes_cpu_use_against_the_previous_one():
    first = stats(1_000_000_000, None, 4_000_000_000, None)
    assert ct.cpu_percent_of_limit(ct.with_baseline(first, None), 1.0) is None
    second = stats(1_500_000_000, None, 8_000_000_000, None)
    assert ct.cpu_percent_of_limit(ct.with_baseline(second, first["cpu_stats"]), 1.0) == pytest.approx(50.0)


@dataclass
class FakeApi:
    """What collect_containers asks of the engine (docker-py's low-level API): a listing, inspect, stats."""

    total: int = 1_000
    system: int = 10_000
    calls: list = field(default_factory=list)
    listing: list = field(
        default_factory=lambda: [
            {
                "Id": "id1",
                "Names": ["/s-backend-1"],
                "State": "running",
                "Status": "Up 5 minutes (healthy)",
                "Labels": {"tenfold.pool": "backend", "tenfold.replica": "1"},
                "Ports": [],
            }
        ]
    )

    @property
    def api(self) -> FakeApi:
        return self

    def containers(self, all: bool, filters: dict) -> list:
        self.calls.append("list")
        return self.listing

    def inspect_container(self, cid: str) -> dict:
        self.calls.append(f"inspect {cid}")
        return {"HostConfig": {"NanoCpus": 1_000_000_000}}

    def stats(self, cid: str, stream: bool, one_shot: bool) -> dict:
        assert not stream and one_shot
        self.calls.append(f"stats {cid}")
        sample = stats(self.total, None, self.system, None, cpus=1)
        sample["memory_stats"] = {"usage": 100, "limit": 1000}
        return sample


def test_cpu_is_taken_against_the_previous_reading_and_limits_are_inspected_once():
    engine = FakeApi()
    memory = ct.EngineMemory(cpu={"gone": {}}, host_config={"gone": {}})
    [record] = ct.collect_containers(engine, "s", memory)
    assert record.cpu_percent is None and record.memory_percent == pytest.approx(10.0)
    assert record.health == "healthy" and record.name == "s-backend-1" and record.replica == 1
    assert set(memory.cpu) == set(memory.host_config) == {"id1"}
    engine.total, engine.system = 3_000, 14_000  # 2 000 of 4 000 host time: half of its 1 CPU limit
    [record] = ct.collect_containers(engine, "s", memory)
    assert record.cpu_percent == pytest.approx(50.0)
    assert engine.calls == ["list", "inspect id1", "stats id1", "list", "stats id1"]


def test_a_listing_entry_reads_as_inspect_attributes():
    summary = {
        "State": "running",
        "Status": "Up 3 seconds (health: starting)",
        "Ports": [
            {"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 18201, "Type": "tcp"},
            {"PrivatePort": 9000, "Type": "tcp"},  # not published
        ],
    }
    attrs = ct.attrs_from_summary(summary, {"NanoCpus": 500_000_000})
    assert ct.published(attrs) == "127.0.0.1:18201"
    assert ct.health_of(attrs) == "starting"
    assert ct.limit_cpus(attrs["HostConfig"]) == 0.5
    assert [
        ct.health_from_status(s) for s in ("Up 1 hour (healthy)", "Up 2 s (unhealthy)", "Exited (0)")
    ] == [
        "healthy",
        "unhealthy",
        None,
    ]


def test_cpu_limit_from_host_config():
    assert ct.limit_cpus({"NanoCpus": 1_500_000_000}) == 1.5
    assert ct.limit_cpus({"NanoCpus": 0, "CpuQuota": 50_000, "CpuPeriod": 100_000}) == 0.5
    assert ct.limit_cpus({"NanoCpus": 0, "CpuQuota": -1, "CpuPeriod": 0}) is None
    assert ct.limit_cpus({}) is None


def test_memory_percent_leaves_out_inactive_page_cache():
    v2 = {"memory_stats": {"usage": 300, "limit": 1000, "stats": {"inactive_file": 100}}}
    v1 = {"memory_stats": {"usage": 300, "limit": 1000, "stats": {"total_inactive_file": 200}}}
    assert ct.memory_percent_of_limit(v2) == pytest.approx(20.0)
    assert ct.memory_percent_of_limit(v1) == pytest.approx(10.0)
    assert ct.memory_percent_of_limit({"memory_stats": {}}) is None


def test_inflight_from_a_health_answer():
    assert ct.parse_inflight(b'{"status": "ok", "instance": "x", "pool": "backend", "inflight": 3}') == 3
    assert ct.parse_inflight(b'{"status": "ok"}') is None
    assert ct.parse_inflight(b'{"inflight": true}') is None
    assert ct.parse_inflight(b"<html>") is None


def test_container_record_from_inspect_attributes():
    attrs = {
        "State": {"Status": "running", "Health": {"Status": "healthy"}},
        "HostConfig": {"NanoCpus": 1_000_000_000},
        "NetworkSettings": {
            "Ports": {
                "8080/tcp": [
                    {"HostIp": "::", "HostPort": "18201"},
                    {"HostIp": "0.0.0.0", "HostPort": "18201"},
                ]
            }
        },
    }
    labels = {"tenfold.pool": "backend", "tenfold.replica": "2"}
    sample = stats(1_500_000_000, 1_000_000_000, 8_000_000_000, 4_000_000_000)
    sample["memory_stats"] = {"usage": 200, "limit": 1000, "stats": {"inactive_file": 0}}
    record = ct.metrics_of("tenfold-backend-2", attrs, labels, sample, 4)
    assert record == ContainerMetrics(
        "tenfold-backend-2", "backend", 2, "running", "healthy", "0.0.0.0:18201", 50.0, 20.0, 4
    )
    assert ct.health_url(record.address) == "http://127.0.0.1:18201/health"
    assert ct.health_url("::1:18201") == "http://[::1]:18201/health"


# --- LB members -------------------------------------------------------------------------------------
def lb_member(port: int, state: str = "active", inflight: int = 0, failing: bool = False) -> dict:
    return {
        "id": f"t-backend-{port % 10}",
        "address": "127.0.0.1",
        "port": port,
        "state": state,
        "inflight": inflight,
        "failing": failing,
    }


def members_answer(pools: dict[str, list[dict]]) -> str:
    """The text of GET /members, as the LB writes it."""
    body = {name: {"pool": name, "generation": 7, "members": listed} for name, listed in pools.items()}
    return json.dumps({"pools": body})


MEMBERS = members_answer(
    {
        "backend": [
            lb_member(18201, inflight=2),
            lb_member(18202, failing=True),
            lb_member(18204, state="draining", inflight=1),
        ],
        "frontend": [],
    }
)


def test_members_are_parsed_per_pool_with_their_state_and_inflight():
    members = parse_members(MEMBERS)
    assert members is not None and set(members) == {"backend", "frontend"}
    first, failing, draining = members["backend"]
    assert first == LbMember("t-backend-1", "127.0.0.1", 18201, "active", 2, False)
    assert first.endpoint == "127.0.0.1:18201" and first.serving
    assert failing.failing and failing.serving  # resting, but still an active member
    assert draining.state == "draining" and not draining.serving and draining.inflight == 1
    assert members["frontend"] == []
    assert active_endpoints(members["backend"]) == {"127.0.0.1:18201", "127.0.0.1:18202"}
    assert endpoints(members["backend"]) == {"127.0.0.1:18201", "127.0.0.1:18202", "127.0.0.1:18204"}


def test_members_read_from_bytes_and_whole_floats():
    text = members_answer({"backend": [{**lb_member(18201), "port": 18201.0, "inflight": 3.0}]})
    [member] = parse_members(text.encode())["backend"]
    assert (member.port, member.inflight) == (18201, 3)


def test_a_negative_inflight_count_reads_as_zero():
    [member] = parse_members(members_answer({"backend": [lb_member(18201, inflight=-1)]}))["backend"]
    assert member.inflight == 0  # the LB's counter between its decrement and its reset to 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "<html>502 Bad Gateway</html>",
        "[]",
        "{}",
        '{"pools": []}',
        '{"pools": {"backend": []}}',
        '{"pools": {"backend": {"pool": "backend"}}}',
        '{"pools": {"backend": {"pool": "frontend", "members": []}}}',
        '{"pools": {"backend": {"members": {}}}}',
        "[" * 100_000 + "]" * 100_000,
        members_answer({"backend": ["t-backend-1"]}),
        members_answer({"backend": [{**lb_member(18201), "state": "down"}]}),
        members_answer({"backend": [{**lb_member(18201), "port": "18201"}]}),
        members_answer({"backend": [{**lb_member(18201), "port": 0}]}),
        members_answer({"backend": [{**lb_member(18201), "port": 70000}]}),
        members_answer({"backend": [{**lb_member(18201), "port": True}]}),
        members_answer({"backend": [{**lb_member(18201), "inflight": None}]}),
        members_answer({"backend": [{**lb_member(18201), "inflight": 1.5}]}),
        members_answer({"backend": [{**lb_member(18201), "failing": "no"}]}),
        members_answer({"backend": [{**lb_member(18201), "id": ""}]}),
        members_answer({"backend": [{k: v for k, v in lb_member(18201).items() if k != "address"}]}),
        members_answer({"backend": [lb_member(18201)], "frontend": [{"id": "x"}]}),
    ],
)
def test_an_answer_that_is_not_a_members_answer_is_unknown_not_empty(text):
    assert parse_members(text) is None


def test_a_pool_object_without_its_name_is_read_under_its_key():
    text = json.dumps({"pools": {"backend": {"members": [lb_member(18201)]}}})
    assert [m.port for m in parse_members(text)["backend"]] == [18201]


def test_an_lb_that_does_not_answer_is_unknown():
    assert read_members(closed_port_url().replace("/nginx_status", "/members"), timeout=0.5) is None
    assert read_members("not a url") is None


def test_a_wildcard_published_address_is_reached_on_loopback():
    assert member_key("0.0.0.0:18201") == "127.0.0.1:18201"
    assert member_key("[::]:18201") == "127.0.0.1:18201"
    assert member_key("10.0.0.5:18201") == "10.0.0.5:18201"
    assert member_key(None) is None


# --- a pool's figures ----------------------------------------------------------------------------------
def replica(
    i: int,
    health: str | None = "healthy",
    state: str = "running",
    cpu: float | None = 10.0,
    inflight: int | None = 1,
):
    return ContainerMetrics(
        f"t-backend-{i}", "backend", i, state, health, f"127.0.0.1:1820{i}", cpu, 20.0 + i, inflight
    )


def members_of(*ports: int, draining: tuple[int, ...] = ()) -> list[LbMember]:
    listed = [lb_member(p) for p in ports] + [lb_member(p, state="draining") for p in draining]
    return parse_members(members_answer({"backend": listed}))["backend"]


def test_serving_is_healthy_and_an_active_lb_member_the_rest_of_the_running_ones_are_starting():
    replicas = [
        replica(1, cpu=30.0),
        replica(2, cpu=50.0),
        replica(3, health="starting", cpu=90.0),  # not healthy yet
        replica(4, cpu=70.0),  # healthy, not yet in the LB
        replica(5, state="exited", inflight=None),
    ]
    pool = pool_snapshot("backend", replicas, members_of(18201, 18202, 18203), None)
    assert (pool.replicas, pool.serving, pool.starting, pool.lb_members) == (4, 2, 2, 3)
    assert pool.cpu_percent == pytest.approx(40.0)  # mean over the serving ones only
    assert pool.memory_percent == pytest.approx(21.5)
    assert pool.inflight == 4
    assert pool.unlisted == 1  # replica 4


def test_a_draining_member_neither_serves_nor_is_unlisted():
    replicas = [replica(1), replica(2), replica(3)]
    pool = pool_snapshot("backend", replicas, members_of(18201, 18202, draining=(18203,)), None)
    assert (pool.replicas, pool.serving, pool.starting, pool.lb_members, pool.unlisted) == (3, 2, 1, 2, 0)


def test_a_running_replica_the_lb_does_not_list_is_unlisted_and_a_wildcard_bind_is_matched_on_loopback():
    wildcard = ContainerMetrics("t-backend-1", "backend", 1, "running", "healthy", "0.0.0.0:18201", 1, 1, 0)
    stranded = replica(2)
    gone = replica(3, state="exited")
    pool = pool_snapshot("backend", [wildcard, stranded, gone], members_of(18201), None)
    assert (pool.serving, pool.lb_members, pool.unlisted) == (1, 1, 1)


def test_a_pool_without_members_is_known_and_empty():
    empty = pool_snapshot("backend", [replica(1)], [], None)
    assert (empty.serving, empty.starting, empty.lb_members, empty.unlisted) == (0, 1, 0, 1)


def test_unknown_sources_give_none_not_zero():
    pool = pool_snapshot("backend", None, None, None)
    assert all(value is None for key, value in vars(pool).items() if key != "pool")
    partly = pool_snapshot("backend", [replica(1)], None, None)
    assert partly.replicas == 1 and partly.serving is None and partly.cpu_percent is None
    assert partly.lb_members is None and partly.unlisted is None
    no_docker = pool_snapshot("backend", None, members_of(18201), None)
    assert no_docker.lb_members == 1 and no_docker.serving is None and no_docker.unlisted is None


def test_inflight_is_unknown_when_no_running_replica_answers_and_zero_without_replicas():
    assert pool_snapshot("backend", [replica(1, inflight=None)], [], None).inflight is None
    assert pool_snapshot("backend", [], [], None).inflight == 0


# --- the collector, on files and a local status server -----------------------------------------------
class _Stub:
    """The LB's status server on 127.0.0.1: stub_status, whose request counter the test sets, and GET
    /members, whose answer it sets. Like nginx, it counts every request it serves, members reads too."""

    def __init__(self) -> None:
        self.requests = 1000
        self.members_status = 200
        self.members_body = MEMBERS
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests += 1  # nginx counts the request itself
                status, body = (
                    200,
                    (
                        "Active connections: 7 \nserver accepts handled requests\n"
                        f" 100 100 {stub.requests} \nReading: 0 Writing: 1 Waiting: 6 \n"
                    ),
                )
                if self.path == "/members":
                    status, body = stub.members_status, stub.members_body
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/nginx_status"
        self.members_url = f"http://127.0.0.1:{self.server.server_port}/members"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub()
    yield server
    server.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nginx_status"


def no_engine(tmp_path: Path) -> docker.DockerClient:
    """A client of an engine that is not there (a socket path nothing listens on)."""
    return docker.DockerClient(base_url=f"unix://{tmp_path}/no-docker.sock", version="1.41", timeout=1)


def write_log(path: Path, entries: list[dict]) -> None:
    with path.open("a") as handle:
        handle.writelines(json.dumps(e) + "\n" for e in entries)


def test_members_are_read_over_http_and_a_bad_answer_is_unknown(stub):
    assert read_members(stub.members_url) == parse_members(MEMBERS)
    stub.members_body = "<html>oops</html>"
    assert read_members(stub.members_url) is None
    stub.members_status, stub.members_body = 500, MEMBERS
    assert read_members(stub.members_url) is None


def test_collector_reports_missing_sources_as_none_with_warnings(tmp_path):
    members_url = closed_port_url().replace("/nginx_status", "/members")
    collector = Collector(
        "unit",
        tmp_path / "access.json.log",
        closed_port_url(),
        members_url,
        docker_client=no_engine(tmp_path),
    )
    try:
        snap = collector.collect(NOW)
    finally:
        collector.close()
    assert snap.lb_active_connections is None and snap.lb_request_rate is None
    assert snap.log_state == "missing"
    backend = snap.pools["backend"]
    assert backend.replicas is None and backend.serving is None and backend.rps is None
    assert backend.lb_members is None and backend.unlisted is None
    text = " | ".join(snap.warnings)
    for what in (
        "stub_status unreachable",
        "access log missing",
        f"LB members {members_url} unreadable: serving unknown",
        "Docker engine unreachable",
    ):
        assert what in text
    assert json.loads(snap.to_json())["pools"]["backend"]["rps"] is None


def test_collector_counts_the_pools_active_lb_members(tmp_path, stub):
    collector = Collector(
        "unit", tmp_path / "access.json.log", stub.url, stub.members_url, docker_client=no_engine(tmp_path)
    )
    try:
        snap = collector.collect(NOW)
        assert snap.pools["backend"].lb_members == 2  # the draining one gets no new requests
        assert snap.pools["frontend"].lb_members == 0
        assert not any("LB members" in w for w in snap.warnings)
        stub.members_body = '{"pools": {"backend": {"members": "none"}}}'
        unknown = collector.collect(NOW + 1)
        assert unknown.pools["backend"].lb_members is None
        assert f"LB members {stub.members_url} unreadable: serving unknown" in unknown.warnings
    finally:
        collector.close()


def test_a_log_the_collector_cannot_read_to_its_end_in_a_tick_is_behind_and_gives_no_traffic(tmp_path, stub):
    # As under a flood of long lines: more than a tick's read arrives every tick.
    log = tmp_path / "access.json.log"
    log.write_text("")
    one = len(json.dumps(entry(NOW)) + "\n")
    collector = Collector(
        "unit", log, stub.url, stub.members_url, docker_client=no_engine(tmp_path), max_read_bytes=one * 50
    )
    try:
        collector.collect(NOW)
        write_log(log, [entry(NOW + 0.5 + i * 0.001) for i in range(120)])
        behind = collector.collect(NOW + 1)
        assert behind.log_state == "behind"
        assert behind.log_behind_bytes == log.stat().st_size - one * 50
        assert behind.pools["backend"].rps is None and behind.pools["backend"].requests is None
        assert any("access log behind: 0.0 MiB not read yet" in w for w in behind.warnings)
        assert collector.collect(NOW + 2).log_state == "behind"
        caught_up = collector.collect(NOW + 3)  # the last 20 lines: the end of the log
        assert (caught_up.log_state, caught_up.log_behind_bytes) == ("ok", 0)
        assert caught_up.pools["backend"].requests == 120
    finally:
        collector.close()


def test_behind_comes_before_warming_and_after_missing():
    assert (
        log_state(available=True, covered_s=0, quiet_s=0, unlogged_rps=None, caught_up=False)[0] == "behind"
    )
    assert (
        log_state(available=False, covered_s=0, quiet_s=0, unlogged_rps=None, caught_up=False)[0] == "missing"
    )


def test_collector_tells_an_idle_pool_from_a_stale_log(tmp_path, stub):
    log = tmp_path / "access.json.log"
    log.write_text("")
    collector = Collector(
        "unit",
        log,
        stub.url,
        stub.members_url,
        docker_client=no_engine(tmp_path),
        stale_after_s=10,
    )
    try:
        collector.collect(NOW)
        write_log(
            log, [entry(NOW + 1.5 + i * 0.01) for i in range(20)] + [{"broken": 1}, entry(NOW + 2, pool="lb")]
        )
        with log.open("a") as handle:
            handle.write("not json\n")
        busy = collector.collect(NOW + 2)
        assert busy.log_state == "ok"
        assert busy.pools["backend"].requests == 20
        assert busy.pools["backend"].rps == pytest.approx(10.0)  # 20 requests over the 2 s covered so far
        assert busy.pools["frontend"].rps == 0.0  # idle, and known to be
        assert busy.log_malformed == 1
        assert any("malformed" in w for w in busy.warnings)
        assert busy.lb_active_connections == 7

        idle = collector.collect(NOW + 20)  # nginx saw only the collector's own requests
        assert idle.log_state == "ok" and idle.pools["backend"].rps == 0.0
        assert idle.lb_request_rate == pytest.approx(2 / 18)  # a members read and a stub_status poll

        # A second later: 2 requests/s, every one the collector's own, and no line for 19 s. Were the
        # members read taken for a visitor's request, 1 unlogged request/s would make the log "stale".
        quick = collector.collect(NOW + 21)
        assert quick.lb_request_rate == pytest.approx(2.0)
        assert quick.log_state == "ok" and quick.pools["backend"].rps == 0.0

        stub.requests += 5000  # nginx served plenty, but not a line reached the log
        stale = collector.collect(NOW + 40)
        assert stale.log_state == "stale"
        assert stale.pools["backend"].rps is None and stale.pools["backend"].p95_s is None
        assert any("stale" in w for w in stale.warnings)
    finally:
        collector.close()
