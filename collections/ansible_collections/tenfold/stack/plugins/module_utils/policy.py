# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The scaling policy: a pool's metrics in, its desired replicas and a reason out.

Pure, like the replica calculator of Kubernetes' HPA controller: no I/O, no clock (`now` is passed in),
stdlib only. The monitor, the Ansible modules and the tests all call it. `docs/scaling-policy.md` has the
rules with numbers; the choices the issue left open are these:

- **Current** is the replicas that exist and run (`PoolMetrics.replicas`); bounds and the up limit apply
  to it. **Serving** is those of them that are healthy and in the LB upstream.
- **Proportional signals** (HPA): each recommends `ceil(current * observed / target)`, or `current` while
  `|observed / target - 1| ≤ tolerance`; the largest recommendation wins. CPU % and memory % are means over
  the *serving* replicas; the load they measure is projected over every existing replica, as HPA does with
  pods that are not ready yet (counted at 0 % on a scale-up). So cpu recommends
  `ceil(serving * cpu / target)` and replicas still starting count as capacity on its way: no second
  scale-up for load they are about to take. The request rate is pool-wide, so it recommends
  `ceil(rps / target_rps_per_replica)` whatever is serving.
- **Triggers** are the seed monitor's alarms (cpu > 75 %, memory > 75 %, > 200 req/s): a crossed trigger
  recommends at least `current + 1`. A trigger fires only while its signal is also above its target
  (projected as above), so it never grows a pool already sized for the load. At the defaults that makes
  the request-rate trigger matter only for pools of 7+ replicas (6 * 33 req/s < 200 req/s; below that the
  proportional rule already asks for more than +1), where it acts at the target instead of at target +10 %.
  The cpu and memory triggers (75 %) sit inside the tolerance band above the 70 % target (63-77 %), so at
  the defaults a pool grows from 75 % instead of 77 %. `None` disables a trigger.
- **Emergency** (error rate > 5 % or p95 > 1 s, or no replica serving while requests arrive): recommends
  `max(2 * serving, serving + 4)`: the full up step, counted from the replicas that serve, so replicas of
  an earlier step that are still starting are part of it. An emergency blocks any scale-down. A pool with
  no serving replica under traffic (overloaded replicas fail their health checks too) recommends at least
  `current + 1`, so overload never looks like a dead pool.
- **Panic** (Knative's panic window): when the request rate over the last few seconds (`panic_rps`, a
  short window beside the stable one) is at least `panic_threshold` times what the serving replicas are
  sized for (`serving * target_rps_per_replica`), the pool goes at once to `ceil(panic_rps / target)`,
  bounded by the up limit and `max_replicas` like any scale-up; no scale-down while it panics. A spike
  shows in the short window seconds before the stable one has caught up with it.
- **Up** is fast: no stabilization, at most `max(2 * current, current + 4)` per decision, and no sooner
  than `up_cooldown_s` after the pool's last scale event.
- **Down** is careful. A decision can support a scale-down only when its metrics are fresh and complete
  (rps, cpu, memory, and error rate and p95 unless no request arrived), every replica serves, no emergency
  holds, and every utilization is below `scale_down_utilization` (30 %: hysteresis against the 70 % target).
  Each decision records in the pool's `Window` what it would accept: its recommendation if it supports a
  scale-down, else the current count. A scale-down goes to the highest record of the last
  `stabilization_window_s`, needs fresh metrics for that whole window (after a start, or after missing or
  stale metrics, it waits a full window), and waits `cooldown_s` after the pool's last scale event.
- **Stale or missing metrics** (`metrics is None`, or older than `max_metric_age_s`) change nothing: a
  stale replica count may be wrong, and a scale request is absolute. A missing signal (None) is skipped
  for a scale-up and blocks a scale-down.
- **Bounds** are hard, as in HPA: with fresh metrics a pool outside `[min, max]` goes to the nearest bound
  whatever else holds (a pool below its minimum can grow by more than the up limit to reach it).
- Recommendations are clamped to the bounds before they are compared and recorded.
- A `Decision` is absolute: act on `desired` only when `action` is not "hold".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

ACTIONS = ("up", "down", "hold")
# Float slack for comparisons at exact thresholds (1.1 * 70 is 77.00000000000001).
_EPSILON = 1e-9


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Problem:
    """What is wrong with a config, and the fields it is about (so a caller can name its own variables)."""

    fields: tuple[str, ...]
    message: str


class PolicyError(ValueError):
    """An invalid scaling policy; `problems` says which fields are at fault."""

    def __init__(self, problems: list[Problem], prefix: str = "invalid scaling policy: ") -> None:
        self.problems = problems
        super().__init__(prefix + "; ".join(problem.message for problem in problems))


@dataclass(frozen=True)
class PolicyConfig:
    """The policy of one pool. Every default is the seed's number (or follows from it)."""

    # Replicas the pool keeps at least / at most.
    min_replicas: int = 3
    max_replicas: int = 10
    # CPU % and memory % (of the replicas' limits) the pool is sized for: above it (± tolerance), it grows.
    target_utilization: float = 70.0
    # A scale-down is accepted only while every utilization signal is below this (hysteresis with 70).
    scale_down_utilization: float = 30.0
    # Requests/s one replica is sized for: ~100 req/s on the 3 baseline replicas (the seed's trigger).
    target_rps_per_replica: float = 33.0
    # Pool-wide req/s above which the pool grows by at least 1 while it is above its rps target (None: off).
    rps_trigger: float | None = 200.0
    # Mean CPU % / memory % above which the pool grows by at least 1 (the seed's monitor; None: off).
    cpu_trigger: float | None = 75.0
    memory_trigger: float | None = 75.0
    # Demand over the short window (panic_rps) at least this many times what the serving replicas are
    # sized for sends the pool at once to the size it needs (None: no panic mode).
    panic_threshold: float | None = 2.0
    # Share of failed requests (5xx answers; 0..1) above which the pool scales up at once.
    emergency_error_rate: float | None = 0.05
    # p95 response time, in seconds, above which the pool scales up at once.
    emergency_p95_s: float | None = 1.0
    # |observed / target - 1| up to this changes nothing (HPA's default).
    tolerance: float = 0.1
    # A scale-down goes to the highest recommendation seen in this many seconds.
    stabilization_window_s: float = 120.0
    # No scale-down for this long after the pool's last scale event.
    cooldown_s: float = 30.0
    # No scale-up for this long after the pool's last scale event.
    up_cooldown_s: float = 5.0
    # Metrics older than this are stale: nothing changes on them.
    max_metric_age_s: float = 10.0

    def __post_init__(self) -> None:
        problems = _config_problems(self)
        if problems:
            raise PolicyError(problems)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> PolicyConfig:
        """A config from settings by name (a role's dict, say); unknown names are an error."""
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            message = f"unknown scaling policy setting(s): {', '.join(unknown)}; known: {', '.join(known)}"
            raise PolicyError([Problem(tuple(unknown), message)], prefix="")
        return cls(**values)  # type: ignore[arg-type]


_POSITIVE = ("target_utilization", "target_rps_per_replica", "max_metric_age_s")
_NON_NEGATIVE = (
    "scale_down_utilization",
    "tolerance",
    "stabilization_window_s",
    "cooldown_s",
    "up_cooldown_s",
)
_OPTIONAL_POSITIVE = (
    "rps_trigger",
    "cpu_trigger",
    "memory_trigger",
    "emergency_error_rate",
    "emergency_p95_s",
    "panic_threshold",
)


def _config_problems(config: PolicyConfig) -> list[Problem]:
    problems = [
        Problem((name,), f"{name} must be a whole number, got {getattr(config, name)!r}")
        for name in ("min_replicas", "max_replicas")
        if not _is_count(getattr(config, name))
    ]
    problems += [
        Problem((name,), f"{name} must be a number above 0, got {getattr(config, name)!r}")
        for name in _POSITIVE
        if not (_is_number(getattr(config, name)) and getattr(config, name) > 0)
    ]
    problems += [
        Problem((name,), f"{name} must be a number of 0 or more, got {getattr(config, name)!r}")
        for name in _NON_NEGATIVE
        if not (_is_number(getattr(config, name)) and getattr(config, name) >= 0)
    ]
    problems += [
        Problem((name,), f"{name} must be a number above 0 or None, got {getattr(config, name)!r}")
        for name in _OPTIONAL_POSITIVE
        if getattr(config, name) is not None
        and not (_is_number(getattr(config, name)) and getattr(config, name) > 0)
    ]
    if problems:
        return problems
    if not 0 <= config.min_replicas <= config.max_replicas or config.max_replicas < 1:
        problems.append(
            Problem(
                ("min_replicas", "max_replicas"),
                "need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got "
                f"{config.min_replicas} and {config.max_replicas}",
            )
        )
    if not config.scale_down_utilization < config.target_utilization <= 100:
        problems.append(
            Problem(
                ("scale_down_utilization", "target_utilization"),
                "need scale_down_utilization < target_utilization <= 100, got "
                f"{config.scale_down_utilization:g} and {config.target_utilization:g}",
            )
        )
    if config.tolerance >= 1:
        problems.append(Problem(("tolerance",), f"tolerance must be below 1, got {config.tolerance:g}"))
    if config.emergency_error_rate is not None and config.emergency_error_rate > 1:
        problems.append(
            Problem(
                ("emergency_error_rate",),
                f"emergency_error_rate is a share (0..1), got {config.emergency_error_rate:g}",
            )
        )
    return problems


@dataclass(frozen=True)
class PoolMetrics:
    """One sample of a pool, taken at `at` (the clock of `now`). A signal that could not be read is None."""

    at: float
    # Containers of the pool that exist and run.
    replicas: int
    # Of those, the ones healthy and in the LB upstream.
    serving: int
    # Requests/s arriving for the pool (all of it, failed ones too).
    rps: float | None = None
    # Mean over the serving replicas, in % of each replica's limit.
    cpu_percent: float | None = None
    memory_percent: float | None = None
    # Share of requests that failed (5xx and upstream failures), 0..1.
    error_rate: float | None = None
    # 95th percentile response time, in seconds.
    p95_s: float | None = None
    # Requests/s over the short (panic) window; None when unknown.
    panic_rps: float | None = None

    def __post_init__(self) -> None:
        problems = _metrics_problems(self)
        if problems:
            raise ValueError("invalid pool metrics: " + "; ".join(problems))

    def signals(self) -> dict[str, float | None]:
        """The signals by the names decisions use."""
        return {
            "rps": self.rps,
            "cpu": self.cpu_percent,
            "memory": self.memory_percent,
            "error_rate": self.error_rate,
            "p95": self.p95_s,
        }


def _metrics_problems(metrics: PoolMetrics) -> list[str]:
    problems = [] if _is_number(metrics.at) else [f"at must be a finite number, got {metrics.at!r}"]
    for name in ("replicas", "serving"):
        value = getattr(metrics, name)
        if not (_is_count(value) and value >= 0):
            problems.append(f"{name} must be a whole number of 0 or more, got {value!r}")
    if not problems and metrics.serving > metrics.replicas:
        problems.append(f"serving ({metrics.serving}) cannot exceed replicas ({metrics.replicas})")
    for name in ("rps", "cpu_percent", "memory_percent", "error_rate", "p95_s", "panic_rps"):
        value = getattr(metrics, name)
        if value is not None and not (_is_number(value) and value >= 0):
            problems.append(f"{name} must be a finite number of 0 or more, or None, got {value!r}")
    if metrics.error_rate is not None and _is_number(metrics.error_rate) and metrics.error_rate > 1:
        problems.append(f"error_rate is a share (0..1), got {metrics.error_rate!r}")
    return problems


@dataclass(frozen=True)
class Decision:
    """What to do with one pool, and why. `desired` is absolute; act on it only when action is not "hold"."""

    pool: str
    current: int
    desired: int
    action: str  # "up" | "down" | "hold"
    reason: str
    # Each signal's (and rule's) recommendation, before bounds and limits.
    recommendations: dict[str, int] = field(default_factory=dict)
    emergency: bool = False
    # The rules that held the decision back or capped it: up_cooldown, up_limit, cooldown, window,
    # window_not_full, stale, no_metrics, missing, starting, hysteresis, emergency, panic, min_replicas,
    # max_replicas.
    limits: tuple[str, ...] = ()
    panic: bool = False  # demand over the short window called for the panic rule

    def as_dict(self) -> dict:
        return {
            "pool": self.pool,
            "current": self.current,
            "desired": self.desired,
            "action": self.action,
            "reason": self.reason,
            "recommendations": dict(self.recommendations),
            "emergency": self.emergency,
            "panic": self.panic,
            "limits": list(self.limits),
        }


@dataclass(frozen=True)
class Window:
    """A pool's memory for the stabilization window.

    `entries` are (time, replicas the decision would accept) of the decisions in the window; `since` is
    when the current run of fresh metrics began (None: no fresh metrics yet, or the last were stale);
    `replicas` is the last fresh count, reported by decisions made without metrics.
    """

    since: float | None = None
    replicas: int | None = None
    entries: tuple[tuple[float, int], ...] = ()

    def _kept(self, now: float, span: float) -> tuple[tuple[float, int], ...]:
        return tuple(entry for entry in self.entries if entry[0] >= now - span)

    def observe(self, now: float, accepts: int, replicas: int, span: float) -> Window:
        since = now if self.since is None else self.since
        return Window(since=since, replicas=replicas, entries=(*self._kept(now, span), (now, accepts)))

    def interrupt(self, now: float, span: float) -> Window:
        return Window(since=None, replicas=self.replicas, entries=self._kept(now, span))

    def covers(self, now: float, span: float) -> bool:
        return self.since is not None and self.since <= now - span + _EPSILON

    def highest(self) -> int | None:
        return max((accepts for _at, accepts in self.entries), default=None)

    def as_dict(self) -> dict:
        return {"since": self.since, "replicas": self.replicas, "entries": [list(e) for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Window:
        entries = tuple((float(at), int(accepts)) for at, accepts in data.get("entries", ()))
        return cls(since=data.get("since"), replicas=data.get("replicas"), entries=entries)


@dataclass(frozen=True)
class Recommendation:
    """One signal's (or rule's) recommendation, in replicas, and its words."""

    name: str
    replicas: int
    why: str
    emergency: bool = False


def up_limit(current: int) -> int:
    """The most replicas one decision may ask for: +100 % or +4, whichever is more."""
    return max(2 * current, current + 4)


def _ceil(value: float) -> int:
    # 3 * 77 / 70 is 3.3000000000000003 in floats: round away float noise before ceil.
    return math.ceil(round(value, 9))


def _proportional(needed: float, current: int, tolerance: float) -> tuple[int, bool]:
    """HPA's rule: (recommendation, within tolerance). `needed` is the load in replicas at target."""
    ratio = needed / current if current else (math.inf if needed > 0 else 1.0)
    if abs(ratio - 1) <= tolerance + _EPSILON:
        return current, True
    return _ceil(needed), False


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _serving_words(metrics: PoolMetrics) -> str:
    if metrics.serving == metrics.replicas:
        return f"{metrics.serving} serving"
    return f"{metrics.serving} serving of {metrics.replicas}"


def _rps_rec(config: PolicyConfig, metrics: PoolMetrics) -> list[Recommendation]:
    if metrics.rps is None:
        return []
    current, target = metrics.replicas, config.target_rps_per_replica
    rec, held = _proportional(metrics.rps / target, current, config.tolerance)
    each = f" ({metrics.rps / current:.1f} each)" if current else ""
    band = f"within ±{config.tolerance:.0%} of " if held else ""
    why = f"rps {metrics.rps:.1f} on {current} replicas{each}, {band}target {target:g} each → {rec}"
    return [Recommendation("rps", rec, why)]


def _projected(metrics: PoolMetrics, value: float) -> float:
    """A utilization of the serving replicas spread over every existing one (starting ones take load too)."""
    return value * metrics.serving / metrics.replicas if metrics.replicas else value


def _utilization_recs(config: PolicyConfig, metrics: PoolMetrics) -> list[Recommendation]:
    recs = []
    target = config.target_utilization
    for name, value in (("cpu", metrics.cpu_percent), ("memory", metrics.memory_percent)):
        if value is None or metrics.serving == 0:
            continue
        rec, held = _proportional(metrics.serving * value / target, metrics.replicas, config.tolerance)
        band = f"within ±{config.tolerance:.0%} of " if held else ""
        why = f"{name} {_pct(value)} on {_serving_words(metrics)}, {band}target {target:g}% → {rec}"
        recs.append(Recommendation(name, rec, why))
    return recs


def _trigger_recs(config: PolicyConfig, metrics: PoolMetrics) -> list[Recommendation]:
    current = metrics.replicas
    recs = []
    for name, value, trigger in (
        ("cpu", metrics.cpu_percent, config.cpu_trigger),
        ("memory", metrics.memory_percent, config.memory_trigger),
    ):
        if value is None or trigger is None or metrics.serving == 0:
            continue
        projected = _projected(metrics, value)
        if projected > max(trigger, config.target_utilization) + _EPSILON:
            shown = _pct(value) if projected == value else f"{_pct(value)} ({_pct(projected)} over {current})"
            why = f"{name} {shown} above trigger {trigger:g}% → at least {current + 1}"
            recs.append(Recommendation(f"{name}_trigger", current + 1, why))
    trigger, rps = config.rps_trigger, metrics.rps
    if trigger is not None and rps is not None:
        capacity = current * config.target_rps_per_replica
        if rps > max(trigger, capacity) + _EPSILON:
            why = (
                f"rps {rps:.1f} above trigger {trigger:g} and target {config.target_rps_per_replica:g}"
                f" * {current} → at least {current + 1}"
            )
            recs.append(Recommendation("rps_trigger", current + 1, why))
    return recs


def _above(value: float, threshold: float) -> bool:
    return value > threshold + _EPSILON


def _emergency_recs(config: PolicyConfig, metrics: PoolMetrics) -> list[Recommendation]:
    serving, current = metrics.serving, metrics.replicas
    step = up_limit(serving)
    step_words = f"max(2 * {serving}, {serving} + 4) from the serving replicas"
    recs = []
    error_rate, error_limit = metrics.error_rate, config.emergency_error_rate
    if error_rate is not None and error_limit is not None and _above(error_rate, error_limit):
        why = f"error rate {error_rate:.1%} above {error_limit * 100:g}%: emergency → {step} ({step_words})"
        recs.append(Recommendation("error_rate", step, why, emergency=True))
    p95, p95_limit = metrics.p95_s, config.emergency_p95_s
    if p95 is not None and p95_limit is not None and _above(p95, p95_limit):
        why = f"p95 {p95:.2f} s above {p95_limit:g} s: emergency → {step} ({step_words})"
        recs.append(Recommendation("p95", step, why, emergency=True))
    if serving == 0 and metrics.rps:
        rec = max(step, current + 1)
        why = f"no replica serving while {metrics.rps:.1f} req/s arrive: emergency → {rec}"
        recs.append(Recommendation("no_serving", rec, why, emergency=True))
    return recs


def _panic_recs(config: PolicyConfig, metrics: PoolMetrics) -> list[Recommendation]:
    rps, threshold = metrics.panic_rps, config.panic_threshold
    if rps is None or threshold is None or rps == 0:
        return []
    sized_for = metrics.serving * config.target_rps_per_replica
    if rps < threshold * sized_for - _EPSILON:
        return []
    rec = _ceil(rps / config.target_rps_per_replica)
    times = f"{rps / sized_for:.1f}x" if sized_for else "no replica serving, and"
    why = (
        f"panic: {rps:.1f} req/s over the short window, {times} what {metrics.serving} serving replicas are"
        f" sized for ({config.target_rps_per_replica:g} each) → {rec}"
    )
    return [Recommendation("panic", rec, why)]


def recommendations(config: PolicyConfig, metrics: PoolMetrics) -> list[Recommendation]:
    """Every signal's and rule's recommendation, in the order that names the winner of a tie in the reason:
    emergencies, the panic rule, then the proportional signals, then the triggers."""
    return [
        *_emergency_recs(config, metrics),
        *_panic_recs(config, metrics),
        *_utilization_recs(config, metrics),
        *_rps_rec(config, metrics),
        *_trigger_recs(config, metrics),
    ]


def _missing(metrics: PoolMetrics) -> list[str]:
    """Signals a scale-down needs that are absent. With no request at all, error rate and p95 mean nothing."""
    needed = ["rps", "cpu", "memory"] if metrics.rps == 0 else list(metrics.signals())
    return [name for name in needed if metrics.signals()[name] is None]


def _down_blockers(
    config: PolicyConfig, metrics: PoolMetrics, emergency: bool, panic: bool
) -> list[tuple[str, str]]:
    """Why this sample cannot support a scale-down, as (limit, words); empty when it can."""
    blockers = []
    missing = _missing(metrics)
    if missing:
        blockers.append(("missing", f"{', '.join(missing)} missing"))
    if metrics.serving < metrics.replicas:
        starting = metrics.replicas - metrics.serving
        blockers.append(("starting", f"{starting} of {metrics.replicas} replicas not serving yet"))
    if emergency:
        blockers.append(("emergency", "an emergency holds"))
    if panic:
        blockers.append(("panic", "the short window's demand panics"))
    hot = [
        f"{name} {_pct(value)}"
        for name, value in (("cpu", metrics.cpu_percent), ("memory", metrics.memory_percent))
        if value is not None and value >= config.scale_down_utilization
    ]
    if hot:
        blockers.append(("hysteresis", f"{', '.join(hot)} not below {config.scale_down_utilization:g}%"))
    return blockers


def _clamp(replicas: int, config: PolicyConfig) -> int:
    return min(max(replicas, config.min_replicas), config.max_replicas)


def _elapsed(now: float, last_scale_at: float | None) -> float | None:
    return None if last_scale_at is None else now - last_scale_at


@dataclass(frozen=True)
class _Step:
    """The outcome of the up or down path before bounds: replicas, limits hit and their words."""

    replicas: int
    limits: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _up(config: PolicyConfig, now: float, current: int, target: int, last_scale_at: float | None) -> _Step:
    elapsed = _elapsed(now, last_scale_at)
    if elapsed is not None and elapsed < config.up_cooldown_s:
        note = f"last scale event {elapsed:.0f} s ago, a scale-up waits {config.up_cooldown_s:g} s"
        return _Step(current, ("up_cooldown",), (note,))
    limit = up_limit(current)
    if target > limit:
        return _Step(
            limit, ("up_limit",), (f"at most max(2 * {current}, {current} + 4) = {limit} per decision",)
        )
    return _Step(target)


def _down(
    config: PolicyConfig,
    now: float,
    current: int,
    target: int,
    window: Window,
    blockers: list[tuple[str, str]],
    last_scale_at: float | None,
) -> _Step:
    span = config.stabilization_window_s
    if blockers:
        words = "; ".join(words for _name, words in blockers)
        return _Step(current, tuple(name for name, _words in blockers), (f"no scale-down: {words}",))
    if not window.covers(now, span):
        seen = 0.0 if window.since is None else now - window.since
        note = f"no scale-down yet: fresh metrics for {seen:.0f} s of the {span:g} s window"
        return _Step(current, ("window_not_full",), (note,))
    elapsed = _elapsed(now, last_scale_at)
    if elapsed is not None and elapsed < config.cooldown_s:
        note = f"no scale-down: last scale event {elapsed:.0f} s ago, cooldown {config.cooldown_s:g} s"
        return _Step(current, ("cooldown",), (note,))
    highest = window.highest()
    if highest is None:
        raise AssertionError("the window holds this decision at least")
    if highest >= current:
        return _Step(
            current, ("window",), (f"no scale-down: {highest} recommended within the last {span:g} s",)
        )
    if highest > target:
        return _Step(
            highest, ("window",), (f"highest recommendation within the last {span:g} s is {highest}",)
        )
    return _Step(target)


def _bound(step: _Step, config: PolicyConfig, wanted: int) -> _Step:
    """Apply the bounds last: they win over the up limit, the cooldowns and the window."""
    bounded = _clamp(step.replicas, config)
    limits, notes = list(step.limits), list(step.notes)
    if bounded < step.replicas:
        limits.append("max_replicas")
        notes.append(f"above max_replicas {config.max_replicas}, which holds whatever else does")
    elif wanted > config.max_replicas:
        limits.append("max_replicas")
        notes.append(f"capped at max_replicas {config.max_replicas}")
    if bounded > step.replicas:
        limits.append("min_replicas")
        notes.append(f"below min_replicas {config.min_replicas}, which holds whatever else does")
    elif wanted < config.min_replicas and bounded == config.min_replicas:
        limits.append("min_replicas")
        notes.append(f"kept at min_replicas {config.min_replicas}")
    return _Step(bounded, tuple(limits), tuple(notes))


def _action(current: int, desired: int) -> str:
    return "up" if desired > current else "down" if desired < current else "hold"


def _head(current: int, desired: int, best: Recommendation) -> str:
    """The reason's head names the kind of the winning recommendation: emergency, panic or none."""
    action = _action(current, desired)
    if action == "hold":
        return f"hold at {current}"
    kind = "emergency " if best.emergency else "panic " if best.name == "panic" else ""
    return f"{kind if action == 'up' else ''}{action} {current} → {desired}"


def _hold(pool: str, current: int, why: str, limit: str) -> Decision:
    return Decision(pool, current, current, "hold", f"hold at {current}: {why}", {}, False, (limit,))


def _decide_fresh(
    config: PolicyConfig,
    pool: str,
    now: float,
    metrics: PoolMetrics,
    last_scale_at: float | None,
    window: Window,
) -> tuple[Decision, Window]:
    current = metrics.replicas
    recs = recommendations(config, metrics)
    emergency = any(rec.emergency for rec in recs)
    panic = any(rec.name == "panic" for rec in recs)
    best = max(
        recs, key=lambda rec: rec.replicas, default=Recommendation("none", current, "no signal to act on")
    )
    target = _clamp(best.replicas, config)
    blockers = _down_blockers(config, metrics, emergency, panic)
    window = window.observe(
        now, max(target, current) if blockers else target, current, config.stabilization_window_s
    )
    if target > current:
        step = _up(config, now, current, target, last_scale_at)
    elif target < current:
        step = _down(config, now, current, target, window, blockers, last_scale_at)
    else:
        step = _Step(current)
    step = _bound(step, config, best.replicas)
    reason = "; ".join((f"{_head(current, step.replicas, best)}: {best.why}", *step.notes))
    decision = Decision(
        pool=pool,
        current=current,
        desired=step.replicas,
        action=_action(current, step.replicas),
        reason=reason,
        recommendations={rec.name: rec.replicas for rec in recs},
        emergency=emergency,
        limits=step.limits,
        panic=panic,
    )
    return decision, window


def evaluate(
    config: PolicyConfig,
    pool: str,
    now: float,
    metrics: PoolMetrics | None,
    last_scale_at: float | None,
    window: Window | None = None,
) -> tuple[Decision, Window]:
    """Decide for one pool: the decision and the pool's window to pass to its next decision.

    `last_scale_at` is the time of the pool's last scale event (logs/scale-events.jsonl), on the clock of
    `now` and `metrics.at`; None when it never scaled.
    """
    window = window or Window()
    span = config.stabilization_window_s
    if metrics is None:
        current = window.replicas or 0
        why = f"no metrics for {pool}; nothing changes without them"
        return _hold(pool, current, why, "no_metrics"), window.interrupt(now, span)
    age = now - metrics.at
    if age > config.max_metric_age_s:
        why = f"metrics are {age:.0f} s old (stale after {config.max_metric_age_s:g} s): nothing changes"
        return _hold(pool, metrics.replicas, why, "stale"), window.interrupt(now, span)
    return _decide_fresh(config, pool, now, metrics, last_scale_at, window)


class Policy:
    """Decisions for a stack's pools, each with its own config and window; deterministic given the inputs.

    `configs` is one config for every pool, or a config per pool name.
    """

    def __init__(self, configs: PolicyConfig | Mapping[str, PolicyConfig] | None = None) -> None:
        configs = PolicyConfig() if configs is None else configs
        self._default = configs if isinstance(configs, PolicyConfig) else None
        self._configs = {} if isinstance(configs, PolicyConfig) else dict(configs)
        self._windows: dict[str, Window] = {}

    def config(self, pool: str) -> PolicyConfig:
        if pool in self._configs:
            return self._configs[pool]
        if self._default is None:
            raise ValueError(
                f"no scaling policy for pool {pool!r}; known: {', '.join(sorted(self._configs))}"
            )
        return self._default

    def window(self, pool: str) -> Window:
        return self._windows.get(pool, Window())

    def decide(
        self, pool: str, now: float, metrics: PoolMetrics | None, last_scale_at: float | None
    ) -> Decision:
        decision, self._windows[pool] = evaluate(
            self.config(pool), pool, now, metrics, last_scale_at, self.window(pool)
        )
        return decision
