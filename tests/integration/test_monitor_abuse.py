"""Attacks with the monitor running: what the LB turns away is no demand, a client's slowness is not the
replicas' latency, and a flood of long log lines does not blind the monitor (its figures are the LB's
counters). Every attacker is one
address off the allowlist; each test stops its monitor and leaves the backend at 3."""

from __future__ import annotations

import json
import time

import pytest
from benchkit.load import Load
from benchkit.monitor import MONITOR_METRICS
from helpers import events_count, events_since, playbook
from test_abuse import Raw, poll_until_cut
from test_monitor import MonitorProcess, backend_replicas

pytestmark = pytest.mark.integration

ATTACKER = "127.0.8.10"
# A 6 kB query string: every request, served or refused, is a 6 kB line of the access log.
LONG = "/api/whoami?pad=" + "x" * 6000


def snapshots(monitor: MonitorProcess) -> list[dict]:
    path = monitor.workdir / MONITOR_METRICS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def flood(stack, path: str, seconds: float) -> Load:
    """Eight keep-alive connections from one address, each as fast as it gets answers."""
    return Load(stack.https_port, [path], rate=10_000, workers=8, sources=[ATTACKER], max_seconds=seconds)


def assert_nothing_scaled(engine, stack, monitor: MonitorProcess, before: int) -> None:
    assert events_since(before) == [], monitor.log()[-3000:]
    assert backend_replicas(engine, stack) == 3
    backend = [d for _, d in monitor.decisions() if d["pool"] == "backend"]
    assert backend and all(d["action"] == "hold" for d in backend), backend


def test_a_flood_from_one_address_scales_nothing_and_shows_as_rejected(engine, stack, tmp_path, figures):
    before = events_count()
    monitor = MonitorProcess(stack, tmp_path, stabilization_window_s=3.0, cooldown_s=5.0)
    monitor.start()
    try:
        time.sleep(4)  # the window fills with the idle baseline
        with flood(stack, "/api/whoami", 12) as load:
            time.sleep(12)
        time.sleep(3)  # the monitor sees the flood's last second
    finally:
        monitor.stop()
    refused = load.tally.failures["/api/whoami: http 429"]
    assert refused > 10 * load.tally.ok, (load.tally.ok, dict(load.tally.failures))
    assert_nothing_scaled(engine, stack, monitor, before)
    backend = [s["pools"]["backend"] for s in snapshots(monitor) if s["traffic_state"] == "ok"]
    peak_rejected = max(p["rejected"] or 0 for p in backend)
    peak_rps = max(p["rps"] or 0 for p in backend)
    # What one address may be served: its rate, and its burst once.
    allowed = int(stack.setting("nginx_lb", "nginx_lb_rate_general"))
    allowed += int(stack.setting("nginx_lb", "nginx_lb_rate_general_burst"))
    assert peak_rejected > 0 and peak_rps <= allowed, (peak_rejected, peak_rps)
    figures.record(
        "Abuse, monitor running",
        "one-address flood: scale runs",
        0,
        note=f"{load.tally.sent} requests in 12 s, {refused} answered 429; the monitor saw at most "
        f"{peak_rps:.1f} req/s served and up to {peak_rejected} rejected in its window",
    )


def test_slow_bodies_from_one_address_scale_nothing(engine, stack, tmp_path, figures):
    # Ten uploads that send a few bytes and stop: each a 408 after client_body_timeout, its request_time
    # about 10 s. Twice over, so the monitor sees them end while its window is full.
    before = events_count()
    monitor = MonitorProcess(stack, tmp_path, stabilization_window_s=3.0, cooldown_s=5.0)
    header = b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nxx"
    cut = 0
    monitor.start()
    try:
        time.sleep(4)
        for _ in range(2):
            connections = [Raw.open(stack, ATTACKER) for _ in range(10)]
            try:
                for conn in connections:
                    conn.send(header)
                poll_until_cut(connections, 25)
                cut += sum(c.cut for c in connections)
            finally:
                for conn in connections:
                    conn.close()
        time.sleep(3)
    finally:
        monitor.stop()
    assert cut == 20
    assert_nothing_scaled(engine, stack, monitor, before)
    p95 = [s["pools"]["backend"]["p95_s"] for s in snapshots(monitor) if s["traffic_state"] == "ok"]
    assert all(v is None or v < 1.0 for v in p95), p95  # the replicas' own latency, not the uploads'
    figures.record(
        "Abuse, monitor running",
        "slow bodies: scale runs",
        0,
        note="20 uploads cut by client_body_timeout (408); the backend p95 the monitor saw stayed below 1 s",
    )


@pytest.mark.long  # the counters cannot fall behind by design; the unit tests hold the states
def test_a_flood_of_long_lines_does_not_blind_the_monitor(engine, stack, tmp_path, figures):
    # Every request is a 6 kB line of the access log; the monitor's figures come from the LB's counters, so
    # it reads all of every tick (no "behind" state to fall into), sees the flood as rejected, and holds.
    before = events_count()
    monitor = MonitorProcess(stack, tmp_path, stabilization_window_s=3.0, cooldown_s=5.0)
    monitor.start()
    try:
        time.sleep(4)
        flood_at = time.time()
        with flood(stack, LONG, 20) as load:
            time.sleep(20)
        time.sleep(3)
    finally:
        monitor.stop()
    assert load.tally.failures["/api/whoami: http 429"] > 10 * load.tally.ok, dict(load.tally.failures)
    assert_nothing_scaled(engine, stack, monitor, before)
    during = [s for s in snapshots(monitor) if s["at"] >= flood_at]
    states = {s["traffic_state"] for s in during}
    assert during and states == {"ok"}, states
    peak_rejected = max(s["pools"]["backend"]["rejected"] for s in during)
    assert peak_rejected > 1000, peak_rejected
    figures.record(
        "Abuse, monitor running",
        "flood of 6 kB lines: ticks the monitor could not trust its figures",
        0,
        note=f"{load.tally.sent} requests in 20 s; {len(during)} ticks all 'ok', up to {peak_rejected} "
        "rejected in a window, no scale run",
    )


@pytest.fixture(autouse=True)
def backend_at_three():
    yield
    assert playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3").rc == 0
