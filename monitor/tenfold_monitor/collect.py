# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""One snapshot of a stack, for the scaler and the metrics log: host, LB, and per pool replicas and traffic.

Every figure whose source is unavailable is None, never 0, and the snapshot says why in `warnings`:
a scaler must not read "the LB cannot be asked" as "nobody is visiting". An idle pool, seen through
counters read this tick, has a real 0 rps.

Traffic comes from the LB's own counters (its status server's GET /status, which also lists the members),
read once a tick; `traffic_state` says whether the figures can be trusted: "ok"; "warming" (less than
MIN_COVERED_S of samples in the window: just started, or after a gap); "restarted" (the counters started
again: nginx restarted, so the window starts again too); "unreachable" (this tick's read failed). Traffic is
None unless "ok".
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from tenfold_monitor import stubstatus
from tenfold_monitor.containers import (
    ENGINE_ERRORS,
    HEALTH_TIMEOUT_S,
    ContainerMetrics,
    EngineMemory,
    collect_containers,
)
from tenfold_monitor.engines import EngineHost, Engines
from tenfold_monitor.host import HostSampler
from tenfold_monitor.lbcounters import (
    DEFAULT_WINDOW_S,
    MIN_COVERED_S,
    CounterWindow,
    PoolTraffic,
    parse_counters,
)
from tenfold_monitor.lbmembers import LbMember, active_endpoints, endpoints, fetch, member_key, parse_members

DEFAULT_POOLS = ("frontend", "backend")
DEFAULT_PANIC_WINDOW_S = 3.0
TRAFFIC_STATES = ("ok", "warming", "restarted", "unreachable")
# How long a remote Docker host's reading (listing and /health; stats go on in the background) may take in a
# tick.
REMOTE_READ_S = 3.0


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
    requests: int | None  # requests a replica answered (or the LB failed with a 5xx) in the window
    rps: float | None
    error_rate: float | None  # share of 5xx answers
    p50_s: float | None  # the replicas' upstream response time
    p95_s: float | None
    p99_s: float | None
    unlisted: int | None = None  # running, and no LB member at all (neither active nor draining)
    panic_rps: float | None = None  # arrivals/s over the short (panic) window
    rejected: int | None = None  # requests the LB turned away itself (429/444/413/408): no demand
    warm: int | None = None  # warm replicas running and healthy, out of the LB, ready to be promoted


@dataclass(frozen=True)
class Snapshot:
    at: float  # epoch seconds
    stack: str
    host_cpu_percent: float | None
    host_memory_percent: float | None
    lb_active_connections: int | None
    lb_request_rate: float | None  # every request nginx read, rejected ones too (stub_status; None at first)
    traffic_state: str  # one of TRAFFIC_STATES (traffic is None unless "ok")
    window_s: float
    pools: dict[str, PoolSnapshot] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Docker hosts whose engine did not answer: their replicas are not counted, and scale runs leave them out
    unreachable_hosts: list[str] = field(default_factory=list)

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


def traffic_state(*, read: bool, restarted: bool, covered_s: float) -> tuple[str, str | None]:
    """Whether this tick's traffic can be trusted: (state, warning or None)."""
    if not read:
        return "unreachable", "LB counters unreachable: traffic unknown, no scaling on it"
    if restarted:
        return "restarted", "LB counters started again (nginx restarted): traffic unknown until the next tick"
    if covered_s < MIN_COVERED_S:
        return "warming", f"traffic window filling ({covered_s:.1f} s covered): traffic unknown"
    return "ok", None


def pool_snapshot(
    pool: str,
    containers: Sequence[ContainerMetrics] | None,
    members: Sequence[LbMember] | None,
    traffic: PoolTraffic | None,
    panic: PoolTraffic | None = None,
) -> PoolSnapshot:
    """One pool's figures. `containers` None: Docker unknown; `members` (the pool's LB members) None: LB
    membership unknown; `traffic` None: the LB's counters cannot be trusted this tick.

    Warm replicas are left out of every count but `warm`: they serve nothing until a scale run promotes them.
    A replica serves when the LB sends it new requests: an active member. A draining member is a replica
    being taken out by a scale run, so it is not `unlisted`: only a replica the LB does not know at all is
    (one a killed scale run started, say), which `Monitor.readmit` puts back.
    """
    mine = None if containers is None else [c for c in containers if c.pool == pool and c.running]
    running = None if mine is None else [c for c in mine if not c.warm]
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
        rejected=None if traffic is None else traffic.rejected,
        warm=None if mine is None else sum(1 for c in mine if c.warm and c.health == "healthy"),
        panic_rps=None if traffic is None or panic is None else panic.rps,
        unlisted=None
        if running is None or known is None
        else sum(1 for c in running if member_key(c.address) not in known),
    )


def container_warnings(containers: Sequence[ContainerMetrics]) -> list[str]:
    """Running replicas whose /health or stats did not answer.

    CPU alone unknown is a container's first one-shot reading (no previous one yet), not worth a warning;
    nor is a new container whose first reading is under way.
    """
    warnings = []
    for c in containers:
        if c.running and c.inflight is None:
            warnings.append(f"{c.name}: /health did not answer: inflight unknown")
        if c.running and c.memory_percent is None and not c.stats_pending:
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
    """Collects one `Snapshot` of `stack` per `collect()` call; keeps the counters' window in between.

    `lb_status_url` is the LB's GET /status (members and counters in one answer), `stub_status_url` its
    stub_status page (connections); both on the LB's local status server, each request bounded by
    `status_timeout`.
    """

    def __init__(
        self,
        stack: str,
        lb_status_url: str,
        stub_status_url: str,
        *,
        pools: Sequence[str] = DEFAULT_POOLS,
        window_s: float = DEFAULT_WINDOW_S,
        panic_window_s: float = DEFAULT_PANIC_WINDOW_S,
        status_timeout: float = 1.0,
        health_timeout: float = HEALTH_TIMEOUT_S,
        engines: Engines | None = None,
    ) -> None:
        self.stack = stack
        self.lb_status_url = lb_status_url
        self.stub_status_url = stub_status_url
        self.pools = tuple(pools)
        self.status_timeout = status_timeout
        self.health_timeout = health_timeout
        self.window = CounterWindow(window_s)
        self.panic_window_s = panic_window_s
        self.engines = engines or Engines()
        # one reading per Docker host at a time, in threads that a lost host may keep waiting
        self._executor = ThreadPoolExecutor(max_workers=len(self.engines.hosts))
        self._reading: dict[str, Future] = {}
        self._host = HostSampler()
        # per Docker host, per container: previous stats reading, limits
        self._engine_memory = {host.name: EngineMemory() for host in self.engines.hosts}
        self._stub: _StubSample | None = None

    def collect(self, now: float | None = None) -> Snapshot:
        now = time.time() if now is None else now
        warnings: list[str] = []
        host_cpu, host_memory = self._host_figures(warnings)
        stub, rate = self._stub_figures(now, warnings)
        members, state = self._lb_status(now, warnings)
        containers, unreachable = self._containers(warnings)
        names = ordered_pools(self.pools, [c.pool for c in containers or []])
        traffic = self.window.traffic(tuple(names)) if state == "ok" else None
        panic = self.window.traffic(tuple(names), self.panic_window_s) if state == "ok" else None
        pools = {
            pool: pool_snapshot(
                pool,
                containers,
                None if members is None else members.get(pool, []),
                None if traffic is None else traffic.get(pool),
                None if panic is None else panic.get(pool),
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
            traffic_state=state,
            window_s=self.window.window_s,
            pools=pools,
            warnings=warnings,
            unreachable_hosts=unreachable,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        for memory in self._engine_memory.values():
            memory.close()
        self.engines.close()

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
    ) -> tuple[stubstatus.StubStatus | None, float | None]:
        """(status, request rate since the last poll)."""
        try:
            status = stubstatus.parse(stubstatus.fetch(self.stub_status_url, self.status_timeout))
        except (OSError, ValueError) as exc:
            warnings.append(f"stub_status unreachable at {self.stub_status_url}: {exc}")
            self._stub = None
            return None, None
        previous, self._stub = self._stub, _StubSample(status, now)
        if previous is None:
            return status, None
        return status, stubstatus.request_rate(previous.status, status, now - previous.at)

    def _lb_status(self, now: float, warnings: list[str]) -> tuple[dict[str, list[LbMember]] | None, str]:
        """Each pool's LB members (None: unknown) and the traffic state, from one GET /status.

        A pool the LB does not know has no members (it sends the pool nothing)."""
        members = counters = None
        try:
            body = fetch(self.lb_status_url, self.status_timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            warnings.append(f"LB status {self.lb_status_url} unreachable: {exc}: serving unknown")
        else:
            members = parse_members(body)
            if members is None:
                warnings.append(f"LB status {self.lb_status_url}: members unreadable: serving unknown")
            try:
                counters = parse_counters(json.loads(body), now)
            except (ValueError, RecursionError) as exc:
                warnings.append(f"LB status {self.lb_status_url}: counters unreadable: {exc}")
        restarted = counters is not None and not self.window.add(counters)
        state, warning = traffic_state(
            read=counters is not None, restarted=restarted, covered_s=self.window.covered_s()
        )
        if warning:
            warnings.append(warning)
        return members, state

    def _containers(self, warnings: list[str]) -> tuple[list[ContainerMetrics] | None, list[str]]:
        """The stack's containers on every Docker host that answers (read in parallel), and the hosts that
        do not, named in the warnings too: their replicas serve nothing the monitor can count. None when no
        host answers: the replicas are unknown. A remote host gets REMOTE_READ_S to answer, so that a lost
        one does not hold up the tick (its reading goes on in the background until ssh gives up)."""
        hosts = self.engines.hosts
        for host in hosts:
            previous = self._reading.get(host.name)
            if previous is None or previous.done():
                self._reading[host.name] = self._executor.submit(self._host_containers, host)
        remote = [self._reading[h.name] for h in hosts if h.url]
        wait(remote, timeout=REMOTE_READ_S)
        found = []
        for host in hosts:
            reading = self._reading[host.name]
            if not host.url:
                found.append(reading.result())  # the local engine: as long as it takes
            elif reading.done():
                found.append(reading.result())
            else:
                self.engines.failed(host)  # closes its client: the waiting reading ends
                found.append((None, f"no answer within {REMOTE_READ_S:g} s"))
        unreachable = [host.name for host, (_, error) in zip(hosts, found, strict=True) if error]
        for host, (_, error) in zip(hosts, found, strict=True):
            if error:
                warnings.append(f"Docker host {host.name} unreachable: {error}: its replicas unknown")
        if len(unreachable) == len(hosts):
            return None, unreachable
        containers = [c for listed, _ in found for c in listed or []]
        containers.sort(key=lambda m: (m.pool, m.replica if m.replica is not None else 0, m.name))
        warnings.extend(container_warnings(containers))
        return containers, unreachable

    def _host_containers(self, host: EngineHost) -> tuple[list[ContainerMetrics] | None, str | None]:
        if self.engines.resting(host):
            return None, "failed moments ago, not asked again yet"
        try:
            client = self.engines.client(host)
            listed = collect_containers(
                client,
                self.stack,
                self._engine_memory[host.name],
                health_timeout=self.health_timeout,
                stats_wait=False,  # the tick's counts must be fresh; CPU a second old is fine
            )
        except (*ENGINE_ERRORS, OSError) as exc:
            self.engines.failed(host)
            return None, str(exc) or type(exc).__name__
        self.engines.ok(host)
        return listed, None
