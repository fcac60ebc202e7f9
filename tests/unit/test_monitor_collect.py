"""tenfold_monitor's collectors: the LB's counters over a window, stub_status, container figures, LB members,
and the snapshot."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tenfold_monitor import collect, service, stubstatus
from tenfold_monitor import containers as ct
from tenfold_monitor import lbcounters as lbc
from tenfold_monitor.collect import Collector, pool_snapshot
from tenfold_monitor.containers import ContainerMetrics
from tenfold_monitor.engines import EngineHost, Engines
from tenfold_monitor.lbmembers import (
    LbMember,
    active_endpoints,
    endpoints,
    member_key,
    parse_members,
    read_members,
)

NOW = 1_795_782_000.0


BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


def served(requests: dict[str, int], times: dict[float, int] | None = None, failures: int = 0) -> dict:
    """A member's counters as GET /status shows them; `times` maps a bucket's upper bound (inf: the last)
    to its count (all answers fall in the 0.01 s bucket when not given)."""
    times = times if times is not None else {0.01: sum(requests.values())}
    buckets = [0] * (len(BOUNDS) + 1)
    for bound, count in times.items():
        buckets[len(BOUNDS) if bound == float("inf") else BOUNDS.index(bound)] += count
    return {
        "requests": requests,
        "failures": failures,
        "response_time": {"count": sum(buckets), "sum": 0.0, "buckets": buckets},
    }


def lb_status(
    pools: dict[str, dict] | None = None,
    since: float = NOW - 3600,
    members: dict[str, list[dict]] | None = None,
) -> dict:
    """The decoded answer of GET /status: each pool's members, and its counters {served, rejected, lb}."""
    pools = pools if pools is not None else {"backend": {}, "frontend": {}}
    members = members or {}
    return {
        "bucket_bounds": BOUNDS,
        "counters_since": since,
        "pools": {
            name: {
                "pool": name,
                "generation": 1,
                "members": members.get(name, []),
                "served": counters.get("served", {}),
                "rejected": counters.get("rejected", {}),
                "lb": counters.get("lb", {}),
            }
            for name, counters in pools.items()
        },
    }


def sample(at: float, backend: dict, since: float = NOW - 3600) -> lbc.Counters:
    return lbc.parse_counters(lb_status({"backend": backend, "frontend": {}}, since), at)


# --- the LB's counters: rate, errors, latency, rejected ------------------------------------------
def test_counters_of_a_pool_add_up_its_members_and_the_lbs_own_5xx():
    counters = sample(
        NOW,
        {
            "served": {"b1": served({"2xx": 90, "5xx": 4}), "b2": served({"2xx": 10, "4xx": 2})},
            "lb": {"5xx": 3, "4xx": 7},  # 502s with no member left: demand; a 499 or 400: not
            "rejected": {"429": 500, "444": 20},
        },
    ).pools["backend"]
    assert (counters.requests, counters.errors, counters.rejected) == (109, 7, 520)
    assert sum(counters.buckets) == 106  # the members' answers only


def test_rate_errors_and_rejected_are_differences_over_the_time_between_samples():
    window = lbc.CounterWindow(10)
    window.add(sample(NOW, {"served": {"b1": served({"2xx": 100})}, "rejected": {"429": 10}}))
    window.add(
        sample(NOW + 4, {"served": {"b1": served({"2xx": 180, "5xx": 20})}, "rejected": {"429": 5010}})
    )
    traffic = window.traffic(("backend", "frontend"))
    backend = traffic["backend"]
    assert (backend.requests, backend.errors, backend.span_s) == (100, 20, 4)
    assert backend.rps == pytest.approx(25.0)
    assert backend.error_rate == pytest.approx(0.2)
    assert backend.rejected == 5000  # counted apart: no demand
    idle = traffic["frontend"]
    assert (idle.requests, idle.rps, idle.error_rate, idle.p95_s) == (0, 0.0, 0.0, None)


def test_requests_waiting_in_flight_are_demand_too():
    # Saturated replicas answer 10 a second; 40 more arrived and wait on them.
    def at(t: float, answered: int, inflight: int) -> lbc.Counters:
        busy = [{"id": "b1", "address": "127.0.0.1", "port": 1, "state": "active", "inflight": inflight}]
        raw = lb_status({"backend": {"served": {"b1": served({"2xx": answered})}}, "frontend": {}})
        raw["pools"]["backend"]["members"] = busy
        return lbc.parse_counters(raw, t)

    window = lbc.CounterWindow(10)
    window.add(at(NOW, 100, 5))
    window.add(at(NOW + 2, 120, 45))
    backend = window.traffic()["backend"]
    assert backend.requests == 20 and backend.rps == pytest.approx((20 + 40) / 2)
    window.add(at(NOW + 4, 200, 0))  # the queue drained: answers, no new arrivals beyond them
    assert window.traffic(span_s=2)["backend"].rps == pytest.approx((80 - 45) / 2)


def test_a_flood_of_rejected_requests_is_no_demand():
    window = lbc.CounterWindow(10)
    window.add(sample(NOW, {"served": {"b1": served({"2xx": 10})}}))
    window.add(sample(NOW + 2, {"served": {"b1": served({"2xx": 12})}, "rejected": {"429": 190000}}))
    backend = window.traffic()["backend"]
    assert backend.rps == pytest.approx(1.0) and backend.rejected == 190000


def test_latency_quantiles_come_from_the_histogram_of_the_window_only():
    window = lbc.CounterWindow(10)
    # Before the window: slow answers that must not count.
    window.add(sample(NOW, {"served": {"b1": served({"2xx": 100}, {10: 100})}}))
    fast = {10: 100, 0.05: 90, 0.25: 10}
    window.add(sample(NOW + 2, {"served": {"b1": served({"2xx": 200}, fast)}}))
    backend = window.traffic()["backend"]
    assert backend.p50_s == pytest.approx(0.025 + 0.025 * (50 / 90))  # inside (0.025, 0.05]
    assert backend.p95_s == pytest.approx(0.1 + 0.15 * (5 / 10))  # inside (0.1, 0.25]
    assert backend.p99_s == pytest.approx(0.1 + 0.15 * (9 / 10))


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([0] * 12, 0.95, None),
        ([10] + [0] * 11, 0.5, 0.0025),  # the first bucket starts at 0
        ([0] * 11 + [4], 0.5, 10.0),  # all slower than the last bound: that bound
        ([0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0], 1.0, 0.25),
        ([5, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0], 0.5, 0.005),
    ],
)
def test_histogram_quantile_interpolates_within_a_bucket_as_prometheus_does(counts, q, expected):
    result = lbc.histogram_quantile(q, tuple(BOUNDS), tuple(counts))
    assert result == (None if expected is None else pytest.approx(expected))


def test_the_window_keeps_the_samples_of_its_length_only():
    window = lbc.CounterWindow(10)
    for i in range(8):  # a sample every 2 s, 10 more requests each time
        window.add(sample(NOW + 2 * i, {"served": {"b1": served({"2xx": 10 * i})}}))
    backend = window.traffic()["backend"]
    assert backend.span_s == 10 and backend.requests == 50
    short = window.traffic(span_s=4)["backend"]  # a shorter window over the same samples
    assert short.span_s == 4 and short.rps == pytest.approx(5.0)


def test_no_figures_before_a_second_is_covered():
    window = lbc.CounterWindow(10)
    window.add(sample(NOW, {}))
    assert window.traffic() is None and window.covered_s() == 0
    window.add(sample(NOW + 0.5, {}))
    assert window.traffic() is None
    window.add(sample(NOW + 1.5, {}))
    assert window.traffic()["backend"].span_s == 1.5


def test_a_gap_longer_than_the_window_leaves_nothing_to_compare_with():
    window = lbc.CounterWindow(10)
    window.add(sample(NOW, {}))
    window.add(sample(NOW + 2, {}))
    window.add(sample(NOW + 30, {"served": {"b1": served({"2xx": 999})}}))
    assert window.traffic() is None  # the next sample gives figures again


@pytest.mark.parametrize(
    "later",
    [
        {"since": NOW + 5},  # nginx restarted: a new start time
        {"served": {"b1": served({"2xx": 5})}},  # a counter went back (the dict was emptied)
        {"rejected": {"429": 1}},
    ],
)
def test_counters_that_started_again_empty_the_window(later):
    window = lbc.CounterWindow(10)
    window.add(sample(NOW, {"served": {"b1": served({"2xx": 50})}, "rejected": {"429": 9}}))
    since = later.pop("since", NOW - 3600)
    base = {"served": {"b1": served({"2xx": 50})}, "rejected": {"429": 9}}
    assert window.add(sample(NOW + 2, {**base, **later}, since=since)) is False
    assert window.resets == 1 and window.traffic() is None
    assert window.add(sample(NOW + 4, {**base, **later}, since=since)) is True
    assert window.traffic()["backend"].requests == 0


@pytest.mark.parametrize(
    "broken",
    [
        [],
        {"pools": "x"},
        {"pools": {}, "bucket_bounds": []},
        {"pools": {}, "bucket_bounds": [1, 0.5]},
        {**lb_status({"backend": {"served": {"b1": {"requests": {"2xx": -1}}}}})},
        {**lb_status({"backend": {"served": {"b1": served({"2xx": 1}) | {"response_time": {}}}}})},
        {**lb_status({"backend": {"rejected": {"429": "many"}}})},
        {**lb_status({"backend": {"lb": {"5xx": True}}})},
    ],
)
def test_counters_that_are_not_the_lbs_are_an_error(broken):
    with pytest.raises(ValueError):
        lbc.parse_counters(broken, NOW)


def test_the_traffic_state_says_why_figures_are_missing():
    assert collect.traffic_state(read=True, restarted=False, covered_s=2)[0] == "ok"
    assert collect.traffic_state(read=True, restarted=False, covered_s=0.5)[0] == "warming"
    assert collect.traffic_state(read=True, restarted=True, covered_s=0)[0] == "restarted"
    state, warning = collect.traffic_state(read=False, restarted=False, covered_s=9)
    assert state == "unreachable" and "no scaling" in warning


# --- stub_status -------------------------------------------------------------------------------------
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

    def close(self) -> None:
        self.calls.append("close")

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
MEMBER_LISTS = {name: pool["members"] for name, pool in json.loads(MEMBERS)["pools"].items()}


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
    assert read_members(closed_port_url("/members"), timeout=0.5) is None
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


def test_a_warm_replica_counts_only_as_warm_never_as_replica_starting_or_unlisted():
    warm = ContainerMetrics(
        "t-backend-4-warm", "backend", 4, "running", "healthy", "127.0.0.1:18204", 1, 1, 0
    )
    booting = ContainerMetrics(
        "t-backend-5-warm", "backend", 5, "running", "starting", "127.0.0.1:18205", 1, 1, 0
    )
    pool = pool_snapshot("backend", [replica(1), replica(2), warm, booting], members_of(18201, 18202), None)
    assert (pool.replicas, pool.serving, pool.starting, pool.unlisted, pool.warm) == (2, 2, 0, 0, 1)


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


# --- the collector, on a local status server ------------------------------------------------------
class _Stub:
    """The LB's status server on 127.0.0.1: stub_status, and GET /status (members and counters) and
    /members, whose answers the test sets."""

    def __init__(self) -> None:
        self.requests = 1000
        self.status_code = 200
        self.status_body = json.dumps(lb_status(members=MEMBER_LISTS))
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
                if self.path == "/status":
                    status, body = stub.status_code, stub.status_body
                elif self.path == "/members":
                    status, body = stub.status_code, stub.members_body
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        base = f"http://127.0.0.1:{self.server.server_port}"
        self.url, self.status_url, self.members_url = (
            f"{base}/nginx_status",
            f"{base}/status",
            f"{base}/members",
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_counters(self, backend: dict, since: float = NOW - 3600) -> None:
        self.status_body = json.dumps(lb_status({"backend": backend, "frontend": {}}, since, MEMBER_LISTS))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub()
    yield server
    server.close()


def closed_port_url(path: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def no_engine(tmp_path: Path) -> Engines:
    """The engine of a host that is not there (a socket path nothing listens on)."""
    return Engines([EngineHost("gone", f"unix://{tmp_path}/no-docker.sock")])


def test_members_are_read_over_http_and_a_bad_answer_is_unknown(stub):
    assert read_members(stub.members_url) == parse_members(MEMBERS)
    assert read_members(stub.status_url) == parse_members(MEMBERS)  # /status lists them the same way
    stub.members_body = "<html>oops</html>"
    assert read_members(stub.members_url) is None
    stub.status_code, stub.members_body = 500, MEMBERS
    assert read_members(stub.members_url) is None


def test_collector_reports_missing_sources_as_none_with_warnings(tmp_path):
    status_url = closed_port_url("/status")
    collector = Collector("unit", status_url, closed_port_url("/nginx_status"), engines=no_engine(tmp_path))
    try:
        snap = collector.collect(NOW)
    finally:
        collector.close()
    assert snap.lb_active_connections is None and snap.lb_request_rate is None
    assert snap.traffic_state == "unreachable"
    backend = snap.pools["backend"]
    assert backend.replicas is None and backend.serving is None and backend.rps is None
    assert backend.lb_members is None and backend.unlisted is None and backend.rejected is None
    text = " | ".join(snap.warnings)
    for what in (
        "stub_status unreachable",
        f"LB status {status_url} unreachable",
        "LB counters unreachable: traffic unknown, no scaling on it",
        "Docker host gone unreachable",
    ):
        assert what in text
    assert json.loads(snap.to_json())["pools"]["backend"]["rps"] is None
    assert snap.unreachable_hosts == ["gone"]


def test_collector_counts_the_pools_active_lb_members(tmp_path, stub):
    collector = Collector("unit", stub.status_url, stub.url, engines=no_engine(tmp_path))
    try:
        snap = collector.collect(NOW)
        assert snap.pools["backend"].lb_members == 2  # the draining one gets no new requests
        assert snap.pools["frontend"].lb_members == 0
        assert not any("members" in w for w in snap.warnings)
        bad = json.loads(stub.status_body)
        bad["pools"]["backend"]["members"] = "none"
        stub.status_body = json.dumps(bad)
        unknown = collector.collect(NOW + 1)
        assert unknown.pools["backend"].lb_members is None
        assert f"LB status {stub.status_url}: members unreadable: serving unknown" in unknown.warnings
    finally:
        collector.close()


def test_collector_takes_traffic_from_the_lbs_counters_tick_by_tick(tmp_path, stub):
    collector = Collector("unit", stub.status_url, stub.url, engines=no_engine(tmp_path))
    try:
        stub.set_counters({"served": {"b1": served({"2xx": 100})}})
        first = collector.collect(NOW)
        assert first.traffic_state == "warming" and first.pools["backend"].rps is None
        assert any("traffic window filling" in w for w in first.warnings)

        stub.set_counters({"served": {"b1": served({"2xx": 140})}, "rejected": {"429": 9000}})
        busy = collector.collect(NOW + 2)
        assert busy.traffic_state == "ok" and not any("traffic" in w for w in busy.warnings)
        backend = busy.pools["backend"]
        assert (backend.requests, backend.rps, backend.rejected) == (40, 20.0, 9000)
        assert busy.pools["frontend"].rps == 0.0  # idle, and known to be
        assert busy.lb_active_connections == 7

        stub.status_code = 503  # a tick the LB cannot be asked: nothing to go on, and nothing lost
        blind = collector.collect(NOW + 4)
        assert blind.traffic_state == "unreachable" and blind.pools["backend"].rps is None
        stub.status_code = 200
        stub.set_counters({"served": {"b1": served({"2xx": 200})}, "rejected": {"429": 9000}})
        back = collector.collect(NOW + 6)
        assert back.traffic_state == "ok" and back.pools["backend"].requests == 100  # since NOW

        stub.set_counters({"served": {"b1": served({"2xx": 3})}}, since=NOW + 7)  # nginx restarted
        restarted = collector.collect(NOW + 8)
        assert restarted.traffic_state == "restarted" and restarted.pools["backend"].rps is None
        assert any("started again" in w for w in restarted.warnings)
        stub.set_counters({"served": {"b1": served({"2xx": 13})}}, since=NOW + 7)
        again = collector.collect(NOW + 10)
        assert again.traffic_state == "ok" and again.pools["backend"].rps == pytest.approx(5.0)
    finally:
        collector.close()


def test_the_short_window_sees_a_spike_before_the_stable_one_does(tmp_path, stub):
    collector = Collector(
        "unit", stub.status_url, stub.url, window_s=10, panic_window_s=3, engines=no_engine(tmp_path)
    )
    try:
        for i, answered in enumerate([0, 20, 40, 60, 80, 380]):  # 10 req/s, then 150 req/s for 2 s
            stub.set_counters({"served": {"b1": served({"2xx": answered})}})
            snap = collector.collect(NOW + 2 * i)
        backend = snap.pools["backend"]
        assert backend.rps == pytest.approx(380 / 10)
        assert backend.panic_rps == pytest.approx(300 / 2)  # the one sample within 3 s: 2 s back
        metrics = service.pool_metrics(snap, replace(backend, replicas=3, serving=3))
        assert metrics.panic_rps == backend.panic_rps and metrics.rps == backend.rps
    finally:
        collector.close()


def test_counters_that_are_not_the_lbs_give_no_traffic(tmp_path, stub):
    collector = Collector("unit", stub.status_url, stub.url, engines=no_engine(tmp_path))
    try:
        collector.collect(NOW)
        broken = json.loads(stub.status_body)
        del broken["bucket_bounds"]
        stub.status_body = json.dumps(broken)
        snap = collector.collect(NOW + 2)
        assert snap.traffic_state == "unreachable" and snap.pools["backend"].rps is None
        assert snap.pools["backend"].lb_members == 2  # the members are still readable
        assert any("counters unreadable: the LB's status has no histogram bounds" in w for w in snap.warnings)
    finally:
        collector.close()


@dataclass
class SlowStatsApi(FakeApi):
    """A stats call that waits until the test lets it end (an engine samples once a second)."""

    release: threading.Event = field(default_factory=threading.Event)

    def stats(self, cid: str, stream: bool, one_shot: bool) -> dict:
        assert self.release.wait(timeout=10)
        return super().stats(cid, stream, one_shot)


def test_stats_in_the_background_do_not_hold_up_the_listing_and_serve_the_next_collection():
    engine, memory = SlowStatsApi(), ct.EngineMemory()
    try:
        [first] = ct.collect_containers(engine, "s", memory, stats_wait=False)  # returns, stats still held
        assert first.stats_pending and first.memory_percent is None
        assert not [w for w in collect.container_warnings([first]) if "stats" in w]
        engine.release.set()
        memory.reading["id1"].result(timeout=10)
        [second] = ct.collect_containers(engine, "s", memory, stats_wait=False)
        assert not second.stats_pending and second.memory_percent == pytest.approx(10.0)
        assert engine.calls.count("stats id1") in (1, 2)  # the first, and perhaps the next already started
    finally:
        engine.release.set()
        memory.close()
