# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Per-pool traffic over a sliding window of access-log entries: rate, errors and latency percentiles.

Demand is served traffic: only requests that reached a replica (or failed reaching one: a 5xx) count, and
latency is the replicas' own (`upstream_response_time`), never the client's (`request_time` includes its
upload). Requests the LB turned away itself (429, 444, 413, 408, no upstream) are counted apart as
`rejected`: an attack signal, not demand, so a flooding or slow client cannot make the pools grow.

Entries are placed by their own time (`msec`, when nginx logged the request), not by when they were read:
nginx's workers flush their buffers independently, so entries arrive up to a second late and out of order.
Entries of pool `lb` (the LB's own /health, the HTTP → HTTPS redirects) and entries without a pool are left
out: they say nothing about the app pools.

An idle pool has `rps == 0.0` and `requests == 0`: a real zero. "No data" (the log is missing or stale) is
not the window's to say: the collector reports such a pool's traffic as None.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_WINDOW_S = 10.0
EXCLUDED_POOLS = frozenset({"lb", ""})

REJECTED_STATUSES = frozenset({408, 413, 429, 444})

_STATUS_RE = re.compile(r"\d{3}")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Request:
    pool: str
    at: float  # epoch seconds (msec)
    upstream_time: float | None  # seconds spent on replicas (all tries); None when none answered
    failed: bool
    served: bool = True  # the LB passed it to a replica
    rejected: bool = False  # turned away by the LB itself (rate/connection limit, size, timeout)

    @property
    def demand(self) -> bool:
        """Served, or failed on the LB's side (no replica to take it): what scaling may answer."""
        return self.served or self.failed


@dataclass(frozen=True)
class PoolTraffic:
    requests: int  # served (or failed on the way to a replica) in the window
    errors: int
    rps: float | None  # requests / covered seconds; None before the window covers any time
    error_rate: float  # errors / requests; 0.0 when idle
    p50_s: float | None  # upstream_response_time percentiles (nearest rank); None when idle
    p95_s: float | None
    p99_s: float | None
    samples_at: float | None  # time of the newest entry in the window; None when idle
    span_s: float  # seconds the rate is taken over: the window, or less while it fills
    rejected: int = 0  # requests the LB turned away itself in the window (not in `requests`)


# --- pure helpers ---------------------------------------------------------------------------------
def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def upstream_statuses(text: object) -> list[int]:
    """Statuses in nginx's $upstream_status: "200", "502, 200" (next server), "504 : 200" (redirect), "-"."""
    return [int(code) for code in _STATUS_RE.findall(text)] if isinstance(text, str) else []


def upstream_seconds(text: object) -> float | None:
    """Total of nginx's $upstream_response_time ("0.012", "3.001, 0.010", "-" when no replica answered)."""
    if not isinstance(text, str):
        return None
    values = [float(v) for v in _NUMBER_RE.findall(text)]
    return sum(values) if values else None


def reached_upstream(entry: dict) -> bool:
    """Whether the LB passed the request to a replica ($upstream_addr is empty or "-" when it did not)."""
    address = entry.get("upstream_addr")
    return isinstance(address, str) and address not in ("", "-")


def is_failure(status: int | None, upstream_status: object) -> bool:
    """A 5xx answer, or an upstream that failed on the way (any 5xx upstream status, even if retried)."""
    if status is not None and 500 <= status <= 599:
        return True
    return any(500 <= code <= 599 for code in upstream_statuses(upstream_status))


def request_of(entry: dict) -> Request | None:
    """The parts of one access-log entry the window uses; None when it has no time or belongs to no pool."""
    pool = entry.get("pool")
    at = _number(entry.get("msec"))
    if not isinstance(pool, str) or pool in EXCLUDED_POOLS or at is None:
        return None
    number = _number(entry.get("status"))
    status = int(number) if number is not None else None
    served = reached_upstream(entry)
    return Request(
        pool=pool,
        at=at,
        upstream_time=upstream_seconds(entry.get("upstream_response_time")) if served else None,
        failed=is_failure(status, entry.get("upstream_status")),
        served=served,
        rejected=not served and status in REJECTED_STATUSES,
    )


def nearest_rank(ordered: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile of ascending values: the smallest with `percent`% of all at or below it."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def traffic_of(requests: Sequence[Request], span_s: float) -> PoolTraffic:
    """Figures of the requests of one pool seen over `span_s` seconds (rejected ones counted apart)."""
    rejected = sum(r.rejected for r in requests)
    demand = [r for r in requests if r.demand]
    count = len(demand)
    errors = sum(r.failed for r in demand)
    times = sorted(r.upstream_time for r in demand if r.upstream_time is not None)
    return PoolTraffic(
        requests=count,
        errors=errors,
        rps=count / span_s if span_s > 0 else None,
        error_rate=errors / count if count else 0.0,
        p50_s=nearest_rank(times, 50),
        p95_s=nearest_rank(times, 95),
        p99_s=nearest_rank(times, 99),
        samples_at=max((r.at for r in requests), default=None),
        span_s=span_s,
        rejected=rejected,
    )


# --- the window -----------------------------------------------------------------------------------
class TrafficWindow:
    """The requests of the last `window_s` seconds, per pool.

    `since`: the time from which the window has seen every entry (a reader that started at the end of the
    log, say). Until `window_s` has passed since then, rates are taken over the time covered so far.
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, since: float | None = None) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self.since = since
        self.ignored = 0  # entries without a usable time or pool (lb included), since the window was made
        self._heaps: dict[str, list[tuple[float, int, Request]]] = {}
        self._order = itertools.count()

    def add(self, entries: Iterable[dict]) -> int:
        """Feed access-log entries (any order); returns how many were kept."""
        kept = 0
        for entry in entries:
            request = request_of(entry)
            if request is None:
                self.ignored += 1
                continue
            heap = self._heaps.setdefault(request.pool, [])
            heapq.heappush(heap, (request.at, next(self._order), request))
            kept += 1
        return kept

    def covered_s(self, now: float) -> float:
        """Seconds of the window that entries have been seen for."""
        if self.since is None:
            return self.window_s
        return min(self.window_s, max(0.0, now - self.since))

    def evict(self, now: float) -> None:
        """Drop entries at or before `now - window_s`."""
        cutoff = now - self.window_s
        for heap in self._heaps.values():
            while heap and heap[0][0] <= cutoff:
                heapq.heappop(heap)

    def snapshot(self, now: float, pools: Iterable[str] = ()) -> dict[str, PoolTraffic]:
        """Traffic per pool over (now - window_s, now]; `pools` are included even when never seen (idle)."""
        self.evict(now)
        span = self.covered_s(now)
        names = sorted(set(self._heaps) | set(pools))
        return {
            pool: traffic_of([item[2] for item in self._heaps.get(pool, []) if item[0] <= now], span)
            for pool in names
        }
