# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""One snapshot of a stack, for the scaler and the metrics log: host, LB, and per pool replicas and traffic.

Every figure whose source is unavailable is None, never 0, and the snapshot says why in `warnings`:
a scaler must not read "the log is gone" as "nobody is visiting". An idle pool, seen through a log that is
known to be current, has a real 0 rps.

The access log is current when a line arrived in the last `stale_after_s` seconds, or when stub_status
shows nginx served (almost) nothing in the meantime beyond the monitor's own requests to the LB's status
server (stub_status and the members API), which nginx counts and does not log. When neither can be shown,
traffic is None. It is also None while the reader is behind (a tick's read did not reach the end of the
log, as under a flood of long lines): the window then holds part of the traffic, and the rest would drop
out of it before it is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker

from tenfold_monitor import stubstatus
from tenfold_monitor.accesslog import DEFAULT_MAX_BYTES, AccessLogReader
from tenfold_monitor.containers import (
    DEFAULT_WORKERS,
    ENGINE_ERRORS,
    HEALTH_TIMEOUT_S,
    ContainerMetrics,
    EngineMemory,
    collect_containers,
)
from tenfold_monitor.host import HostSampler
from tenfold_monitor.lbmembers import LbMember, active_endpoints, endpoints, member_key, read_members
from tenfold_monitor.window import DEFAULT_WINDOW_S, PoolTraffic, TrafficWindow

DEFAULT_POOLS = ("frontend", "backend")
STALE_AFTER_S = 10.0  # the log is flushed every second; ten seconds without a line needs explaining
STALE_MIN_RPS = 1.0  # requests/s nginx may serve unlogged (its own healthcheck polls stub_status) while idle
MIN_COVERED_S = 1.0  # no rate over less time than this
MIB = 1 << 20


@dataclass(frozen=True)
class PoolSnapshot:
    pool: str
    replicas: int | None  # running containers
    serving: int | None  # running, healthy, and an active LB member of the pool
    starting: int | None  # running, not (yet) serving (a draining replica too, until it is gone)
    lb_members: int | None  # the pool's active LB members (draining ones get no new requests)
    inflight: int | None  # sum of the running replicas' /health inflight that answered
    cpu_percent: float | None  # mean over serving replicas, % of each one's CPU limit
    memory_percent: float | None  # mean over serving replicas, % of each one's memory limit
    requests: int | None  # requests that reached a replica (or failed to) in the traffic window
    rps: float | None
    error_rate: float | None  # share of 5xx answers and upstream failures
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    traffic_at: float | None  # time of the newest access-log entry of the pool in the window
    unlisted: int | None = None  # running, and no LB member at all (neither active nor draining)
    rejected: int | None = None  # requests the LB turned away itself (429/444/413/408): no demand


@dataclass(frozen=True)
class Snapshot:
    at: float  # epoch seconds
    stack: str
    host_cpu_percent: float | None
    host_memory_percent: float | None
    lb_active_connections: int | None
    lb_request_rate: float | None  # requests/s from stub_status (None on the first sample)
    log_state: str  # ok, warming, missing, behind, stale, unverified (traffic is None unless ok)
    log_malformed: int  # malformed access-log lines since the collector started
    window_s: float
    pools: dict[str, PoolSnapshot] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    log_behind_bytes: int = 0  # access-log bytes not read yet

    def to_json(self) -> str:
        """One line for the metrics log (figures rounded to 4 decimals)."""
        return json.dumps(_rounded(asdict(self)), separators=(",", ":"))


def _rounded(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item, digits) for item in value]
    return value


# --- pure parts -----------------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def log_state(
    *,
    available: bool,
    covered_s: float,
    quiet_s: float,
    unlogged_rps: float | None,
    caught_up: bool = True,
    behind_bytes: int = 0,
    stale_after_s: float = STALE_AFTER_S,
    stale_min_rps: float = STALE_MIN_RPS,
) -> tuple[str, str | None]:
    """Whether the window's traffic can be trusted: (state, warning or None).

    `quiet_s`: seconds since a line last arrived; `unlogged_rps`: requests/s stub_status counted beyond the
    monitor's own polls (None when unknown); `caught_up`: the tick's read reached the end of the log;
    `behind_bytes`: what is left to read.
    """
    if not available:
        return "missing", "access log missing: traffic unknown"
    if not caught_up:
        return "behind", (
            f"access log behind: {behind_bytes / MIB:.1f} MiB not read yet: traffic partial, no scaling on it"
        )
    if covered_s < MIN_COVERED_S:
        return "warming", f"traffic window filling ({covered_s:.1f} s covered): traffic unknown"
    if quiet_s < stale_after_s:
        return "ok", None
    if unlogged_rps is None:
        return "unverified", (
            f"no access-log line for {quiet_s:.0f} s and no stub_status rate to tell idle from stale: "
            "traffic unknown"
        )
    if unlogged_rps >= stale_min_rps:
        return "stale", (
            f"access log stale: no line for {quiet_s:.0f} s while nginx served {unlogged_rps:.1f} req/s: "
            "traffic unknown"
        )
    return "ok", None


def pool_snapshot(
    pool: str,
    containers: Sequence[ContainerMetrics] | None,
    members: Sequence[LbMember] | None,
    traffic: PoolTraffic | None,
) -> PoolSnapshot:
    """One pool's figures. `containers` None: Docker unknown; `members` (the pool's LB members) None: LB
    membership unknown; `traffic` None: the access log cannot be trusted.

    A replica serves when the LB sends it new requests: an active member. A draining member is a replica
    being taken out by a scale run, so it is not `unlisted`: only a replica the LB does not know at all is
    (one a killed scale run started, say), which `Monitor.readmit` puts back.
    """
    running = None if containers is None else [c for c in containers if c.pool == pool and c.running]
    active = None if members is None else active_endpoints(members)
    known = None if members is None else endpoints(members)
    serving = None
    if running is not None and active is not None:
        serving = [c for c in running if c.health == "healthy" and member_key(c.address) in active]
    answers = [] if running is None else [c.inflight for c in running if c.inflight is not None]
    return PoolSnapshot(
        pool=pool,
        replicas=None if running is None else len(running),
        serving=None if serving is None else len(serving),
        starting=None if serving is None or running is None else len(running) - len(serving),
        lb_members=None if active is None else len(active),
        inflight=None if running is None or (running and not answers) else sum(answers),
        cpu_percent=None if serving is None else _mean(c.cpu_percent for c in serving),
        memory_percent=None if serving is None else _mean(c.memory_percent for c in serving),
        requests=None if traffic is None else traffic.requests,
        rps=None if traffic is None else traffic.rps,
        error_rate=None if traffic is None else traffic.error_rate,
        p50_s=None if traffic is None else traffic.p50_s,
        p95_s=None if traffic is None else traffic.p95_s,
        p99_s=None if traffic is None else traffic.p99_s,
        traffic_at=None if traffic is None else traffic.samples_at,
        rejected=None if traffic is None else traffic.rejected,
        unlisted=None
        if running is None or known is None
        else sum(1 for c in running if member_key(c.address) not in known),
    )


def container_warnings(containers: Sequence[ContainerMetrics]) -> list[str]:
    """Running replicas whose /health or stats did not answer.

    CPU alone unknown is a container's first one-shot reading (no previous one yet), not worth a warning.
    """
    warnings = []
    for c in containers:
        if c.running and c.inflight is None:
            warnings.append(f"{c.name}: /health did not answer: inflight unknown")
        if c.running and c.memory_percent is None:
            warnings.append(f"{c.name}: no stats sample: CPU/memory unknown")
    return warnings


def ordered_pools(configured: Iterable[str], found: Iterable[str]) -> list[str]:
    first = list(dict.fromkeys(configured))
    return first + sorted(set(found) - set(first))


# --- the collector (I/O at its edges) -------------------------------------------------------------
@dataclass
class _StubSample:
    status: stubstatus.StubStatus
    at: float


class Collector:
    """Collects one `Snapshot` of `stack` per `collect()` call; keeps the log offset and window in between.

    The access log is read from its end when the collector starts (`log_from_start=False`): the window then
    fills over `window_s` seconds, and rates are taken over the time covered so far. With
    `log_from_start`, the whole file is read (`max_read_bytes` per call) and the window counts as full.
    stub_status (`status_url`) and the members (`members_url`) are both the LB's local status server:
    `status_timeout` bounds each of the two requests.
    """

    def __init__(
        self,
        stack: str,
        log_path: Path | str,
        status_url: str,
        members_url: str,
        *,
        pools: Sequence[str] = DEFAULT_POOLS,
        window_s: float = DEFAULT_WINDOW_S,
        stale_after_s: float = STALE_AFTER_S,
        stale_min_rps: float = STALE_MIN_RPS,
        status_timeout: float = 1.0,
        health_timeout: float = HEALTH_TIMEOUT_S,
        log_from_start: bool = False,
        max_read_bytes: int = DEFAULT_MAX_BYTES,
        docker_client: Any | None = None,
    ) -> None:
        self.stack = stack
        self.status_url = status_url
        self.members_url = members_url
        self.pools = tuple(pools)
        self.log_from_start = log_from_start
        self.stale_after_s = stale_after_s
        self.stale_min_rps = stale_min_rps
        self.status_timeout = status_timeout
        self.health_timeout = health_timeout
        self.reader = AccessLogReader(log_path, max_bytes=max_read_bytes, start_at_end=not log_from_start)
        self.window = TrafficWindow(window_s)
        self._started = False
        self._docker = docker_client
        self._host = HostSampler()
        self._engine_memory = EngineMemory()  # per container: previous stats reading, limits
        self._stub: _StubSample | None = None
        self._members_reads = 0  # members requests since the last stub_status poll: nginx counts them too
        self._last_line_at: float | None = None
        self._malformed_seen = 0

    def collect(self, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        warnings: list[str] = []
        host_cpu, host_memory = self._host_figures(warnings)
        stub, rate, unlogged = self._stub_figures(now, warnings)
        state = self._read_log(now, unlogged, warnings)
        members = self._members(warnings)
        containers = self._containers(warnings)
        names = ordered_pools(self.pools, [c.pool for c in containers or []])
        traffic = self.window.snapshot(now, names) if state == "ok" else None
        pools = {
            pool: pool_snapshot(
                pool,
                containers,
                None if members is None else members.get(pool, []),
                None if traffic is None else traffic[pool],
            )
            for pool in names
        }
        return Snapshot(
            at=now,
            stack=self.stack,
            host_cpu_percent=host_cpu,
            host_memory_percent=host_memory,
            lb_active_connections=None if stub is None else stub.active,
            lb_request_rate=rate,
            log_state=state,
            log_malformed=self.reader.malformed,
            window_s=self.window.window_s,
            pools=pools,
            warnings=warnings,
            log_behind_bytes=self.reader.behind_bytes,
        )

    def close(self) -> None:
        self.reader.close()
        if self._docker is not None:
            self._docker.close()

    # --- edges -----------------------------------------------------------------------------------
    def _host_figures(self, warnings: list[str]) -> tuple[float | None, float | None]:
        try:
            host = self._host.sample()
        except (OSError, RuntimeError) as exc:
            warnings.append(f"host metrics unavailable: {exc}")
            return None, None
        return host.cpu_percent, host.memory_percent

    def _stub_figures(
        self, now: float, warnings: list[str]
    ) -> tuple[stubstatus.StubStatus | None, float | None, float | None]:
        """(status, request rate, request rate beyond this collector's own requests)."""
        own, self._members_reads = 1 + self._members_reads, 0  # this poll, the members reads since the last
        try:
            status = stubstatus.parse(stubstatus.fetch(self.status_url, self.status_timeout))
        except (OSError, ValueError) as exc:
            warnings.append(f"stub_status unreachable at {self.status_url}: {exc}")
            self._stub = None
            return None, None, None
        previous, self._stub = self._stub, _StubSample(status, now)
        if previous is None:
            return status, None, None
        elapsed = now - previous.at
        rate = stubstatus.request_rate(previous.status, status, elapsed)
        if rate is None:
            return status, None, None
        return status, rate, max(0.0, rate - own / elapsed)

    def _read_log(self, now: float, unlogged_rps: float | None, warnings: list[str]) -> str:
        """Feed the window with what the log gained; the log's state (traffic is trusted when "ok")."""
        if not self._started:
            self._started, self._last_line_at = True, now
            if not self.log_from_start:
                self.window.since = now  # the reader starts at the log's end: nothing before now is seen
        lines_before = self.reader.malformed
        entries = self.reader.read()
        if entries or self.reader.malformed > lines_before:
            self._last_line_at = now
        self.window.add(entries)
        if self.reader.malformed > self._malformed_seen:
            new = self.reader.malformed - self._malformed_seen
            warnings.append(f"access log: {new} malformed line(s) skipped ({self.reader.malformed} in all)")
            self._malformed_seen = self.reader.malformed
        if self.reader.missing and self.reader.available:
            warnings.append(f"access log {self.reader.path} missing: reading the file it was rotated to")
        state, warning = log_state(
            available=self.reader.available,
            covered_s=self.window.covered_s(now),
            quiet_s=now - (self._last_line_at or now),
            unlogged_rps=unlogged_rps,
            caught_up=self.reader.caught_up,
            behind_bytes=self.reader.behind_bytes,
            stale_after_s=self.stale_after_s,
            stale_min_rps=self.stale_min_rps,
        )
        if warning:
            warnings.append(f"{warning} ({self.reader.path})" if state == "missing" else warning)
        return state

    def _members(self, warnings: list[str]) -> dict[str, list[LbMember]] | None:
        """Each pool's LB members; a pool the LB does not know has none (it sends the pool nothing)."""
        self._members_reads += 1  # counted by nginx whether or not the answer is usable
        members = read_members(self.members_url, self.status_timeout)
        if members is None:
            warnings.append(f"LB members {self.members_url} unreadable: serving unknown")
        return members

    def _containers(self, warnings: list[str]) -> list[ContainerMetrics] | None:
        try:
            if self._docker is None:
                self._docker = docker.from_env(max_pool_size=DEFAULT_WORKERS)
                self._docker.api.trust_env = False  # no proxy lookups from the environment on every call
            containers = collect_containers(
                self._docker, self.stack, self._engine_memory, health_timeout=self.health_timeout
            )
        except ENGINE_ERRORS as exc:
            warnings.append(f"Docker engine unreachable: {exc}: replicas unknown")
            return None
        warnings.extend(container_warnings(containers))
        return containers
