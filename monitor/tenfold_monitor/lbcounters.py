# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Per-pool traffic from the LB's own counters (GET /status): rate, errors and latency over a window.

The LB counts in shared memory what each member answered (by status class, with an upstream-response-time
histogram), what it answered itself for a pool, and what it refused (429, 444, 413, 408). The counters only
grow while nginx runs (a reload keeps them); a restart starts them again, with a new `counters_since`.
The monitor samples them every tick and takes differences: nothing is missed between two samples however
much traffic there was, and a tick that could not read them loses nothing but that tick.

Demand is served traffic: requests a member answered, plus the LB's own 5xx for the pool (no member left
to take them), plus the growth of the requests in flight on the members: when the replicas are saturated,
answers come no faster than they can give them, and the rest of what arrives waits in flight. Latency is
the members' upstream response time, never the client's. Rejected requests are counted apart: an attack
signal, never demand. Everything here is pure; collect.py fetches.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

DEFAULT_WINDOW_S = 10.0
MIN_COVERED_S = 1.0  # no rate over less time than this


@dataclass(frozen=True)
class PoolCounters:
    """A pool's counters at one moment, summed over its members (cumulative since the counters started)."""

    requests: int  # answered by a member, or a 5xx of the LB's own
    errors: int  # 5xx answers, a member's or the LB's
    rejected: int  # refused by the LB itself: not demand
    buckets: tuple[int, ...]  # upstream response times: answers per bucket of `Counters.bounds` (+Inf last)
    inflight: int = 0  # requests on the members now (a gauge, not a counter)


@dataclass(frozen=True)
class Counters:
    at: float  # when the monitor read them
    since: float | None  # when the LB's counters started (None from an LB that does not say)
    bounds: tuple[float, ...]  # the buckets' upper bounds in seconds, ascending; one more bucket is +Inf
    pools: dict[str, PoolCounters]


@dataclass(frozen=True)
class PoolTraffic:
    requests: int  # answered in the window
    errors: int
    rps: float  # arrivals/s: answers plus the growth of the requests in flight
    error_rate: float  # errors / requests; 0.0 when idle
    p50_s: float | None  # upstream response time quantiles from the histogram; None when idle
    p95_s: float | None
    p99_s: float | None
    span_s: float  # seconds the figures are taken over
    rejected: int = 0  # refused by the LB in the window (not in `requests`)


# --- parsing ---------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> int:
    """A counter as cjson writes it (a whole number, maybe as 2.0); ValueError for anything else."""
    if not _is_number(value) or value < 0:
        raise ValueError(f"not a counter: {value!r}")
    return int(value)


def _class_counts(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise ValueError(f"not a table of counts by status class: {raw!r}")
    return {str(key): _count(value) for key, value in raw.items()}


def _pool_counters(raw: Any, width: int) -> PoolCounters:
    if not isinstance(raw, dict) or not isinstance(raw.get("served", {}), dict):
        raise ValueError("a pool without its counters")
    requests = errors = 0
    buckets = [0] * width
    for figures in raw.get("served", {}).values():
        by_class = _class_counts(figures.get("requests") if isinstance(figures, dict) else None)
        requests += sum(by_class.values())
        errors += by_class.get("5xx", 0)
        counts = (figures.get("response_time") or {}).get("buckets")
        if not isinstance(counts, list) or len(counts) != width:
            raise ValueError(f"a member's histogram without its {width} buckets")
        buckets = [a + _count(b) for a, b in zip(buckets, counts, strict=True)]
    own_errors = _class_counts(raw.get("lb", {})).get("5xx", 0)
    rejected = sum(_class_counts(raw.get("rejected", {})).values())
    listed = raw.get("members", [])
    if not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed):
        raise ValueError("a pool whose members are not a list")
    # The LB puts a count that went below 0 back to 0: a reader can see -1 in between.
    inflight = sum(max(0, int(m.get("inflight", 0))) for m in listed if _is_number(m.get("inflight", 0)))
    return PoolCounters(requests + own_errors, errors + own_errors, rejected, tuple(buckets), inflight)


def parse_counters(raw: Any, at: float) -> Counters:
    """The counters in the LB's GET /status answer (decoded JSON), read at `at`; ValueError when malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("pools"), dict):
        raise ValueError("not the LB's status: no pools")
    bounds = raw.get("bucket_bounds")
    if not isinstance(bounds, list) or not bounds or any(isinstance(b, bool) for b in bounds):
        raise ValueError("the LB's status has no histogram bounds")
    bounds_s = tuple(float(b) for b in bounds)
    if list(bounds_s) != sorted(set(bounds_s)):
        raise ValueError(f"histogram bounds not ascending: {bounds}")
    since = raw.get("counters_since")
    pools = {name: _pool_counters(value, len(bounds_s) + 1) for name, value in raw["pools"].items()}
    return Counters(at, float(since) if isinstance(since, int | float) else None, bounds_s, pools)


# --- figures ---------------------------------------------------------------------------------------
def histogram_quantile(q: float, bounds: tuple[float, ...], counts: tuple[int, ...]) -> float | None:
    """The q-quantile of a histogram (per-bucket counts, +Inf last), interpolated within its bucket as
    Prometheus' histogram_quantile does; in the +Inf bucket, the highest finite bound. None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    cumulative = [0]
    for n in counts:
        cumulative.append(cumulative[-1] + n)
    rank = q * total
    i = max(1, bisect.bisect_left(cumulative, rank, lo=1))  # the first bucket whose cumulative count >= rank
    if i > len(bounds):
        return bounds[-1]
    lower = bounds[i - 2] if i >= 2 else 0.0
    inside = counts[i - 1]
    return lower + (bounds[i - 1] - lower) * ((rank - cumulative[i - 1]) / inside if inside else 1.0)


def traffic_between(
    old: PoolCounters, new: PoolCounters, bounds: tuple[float, ...], span_s: float
) -> PoolTraffic:
    requests, errors = new.requests - old.requests, new.errors - old.errors
    arrived = max(0, requests + new.inflight - old.inflight)
    buckets = tuple(b - a for a, b in zip(old.buckets, new.buckets, strict=True))
    return PoolTraffic(
        requests=requests,
        errors=errors,
        rps=arrived / span_s,
        error_rate=errors / requests if requests else 0.0,
        p50_s=histogram_quantile(0.50, bounds, buckets),
        p95_s=histogram_quantile(0.95, bounds, buckets),
        p99_s=histogram_quantile(0.99, bounds, buckets),
        span_s=span_s,
        rejected=new.rejected - old.rejected,
    )


def went_back(old: Counters, new: Counters) -> bool:
    """Whether the counters started again between two samples (nginx restarted): a new start time, other
    bounds, a pool gone, or any counter lower than before."""
    if new.since != old.since or new.bounds != old.bounds:
        return True
    for name, before in old.pools.items():
        after = new.pools.get(name)
        if after is None or after.requests < before.requests or after.errors < before.errors:
            return True
        if after.rejected < before.rejected or any(
            b < a for a, b in zip(before.buckets, after.buckets, strict=True)
        ):
            return True
    return False


class CounterWindow:
    """The samples of the last `window_s` seconds; traffic is the difference between the newest and the
    oldest of them. A restart of the counters empties it: figures start again from the next samples."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._samples: deque[Counters] = deque()
        self.resets = 0  # restarts of the LB's counters seen

    def add(self, sample: Counters) -> bool:
        """Keep a sample (newer than the last); False when the counters had started again (window emptied)."""
        restarted = bool(self._samples) and went_back(self._samples[-1], sample)
        if restarted:
            self._samples.clear()
            self.resets += 1
        self._samples.append(sample)
        while self._samples[0].at < sample.at - self.window_s:
            self._samples.popleft()
        return not restarted

    def covered_s(self, span_s: float | None = None) -> float:
        """Seconds between the newest sample and the oldest one within `span_s` (default: the window)."""
        base = self._base(span_s)
        return 0.0 if base is None else self._samples[-1].at - base.at

    def _base(self, span_s: float | None) -> Counters | None:
        if not self._samples:
            return None
        cutoff = self._samples[-1].at - (self.window_s if span_s is None else min(span_s, self.window_s))
        return next(s for s in self._samples if s.at >= cutoff)

    def traffic(
        self, pools: tuple[str, ...] = (), span_s: float | None = None
    ) -> dict[str, PoolTraffic] | None:
        """Traffic per pool over (up to) the last `span_s` seconds (default: the window); `pools` are
        included even when the LB has no counters for them (idle). None below MIN_COVERED_S covered."""
        base, covered = self._base(span_s), self.covered_s(span_s)
        if base is None or covered < MIN_COVERED_S:
            return None
        newest = self._samples[-1]
        idle = PoolCounters(0, 0, 0, (0,) * (len(newest.bounds) + 1))
        names = sorted(set(newest.pools) | set(pools))
        return {
            name: traffic_between(
                base.pools.get(name, idle), newest.pools.get(name, idle), newest.bounds, covered
            )
            for name in names
        }
