"""The scaling policy: HPA's proportional rule, the seed's thresholds, fast up, careful down, bounds.

Times are seconds on one made-up clock; every decision gets fresh metrics unless a test says otherwise.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import policy as tp
from hypothesis import given, settings
from hypothesis import strategies as st

DEFAULT = tp.PolicyConfig()
# Only the proportional rule: no triggers, no emergencies.
HPA_ONLY = tp.PolicyConfig(
    rps_trigger=None, cpu_trigger=None, memory_trigger=None, emergency_error_rate=None, emergency_p95_s=None
)
WINDOW = DEFAULT.stabilization_window_s


def sample(
    at: float = 0.0,
    replicas: int = 3,
    serving: int | None = None,
    rps: float | None = 99.0,
    cpu: float | None = 70.0,
    memory: float | None = 50.0,
    error_rate: float | None = 0.0,
    p95_s: float | None = 0.2,
    panic_rps: float | None = None,
) -> tp.PoolMetrics:
    """A healthy pool at its targets unless told otherwise."""
    return tp.PoolMetrics(
        at=at,
        replicas=replicas,
        serving=replicas if serving is None else serving,
        rps=rps,
        cpu_percent=cpu,
        memory_percent=memory,
        error_rate=error_rate,
        p95_s=p95_s,
        panic_rps=panic_rps,
    )


def decide(
    metrics: tp.PoolMetrics | None,
    now: float | None = None,
    last_scale_at: float | None = None,
    config: tp.PolicyConfig = DEFAULT,
) -> tp.Decision:
    """One decision of a policy that has seen nothing before."""
    when = (metrics.at if metrics else 0.0) if now is None else now
    return tp.Policy(config).decide("backend", when, metrics, last_scale_at)


def calm(at: float, replicas: int = 10, **overrides: float | None) -> tp.PoolMetrics:
    """A pool far below every threshold: 10 replicas that 3 could carry."""
    values: dict = {"rps": 60.0, "cpu": 10.0, "memory": 20.0} | overrides
    return sample(at=at, replicas=replicas, **values)


def run(
    policy: tp.Policy,
    times: Iterable[float],
    metrics_at: Callable[[float], tp.PoolMetrics | None],
    last_scale_at: float | None = None,
) -> list[tp.Decision]:
    """Decisions of one policy over time, the pool kept at whatever the metrics say (nothing is applied)."""
    return [policy.decide("backend", now, metrics_at(now), last_scale_at) for now in times]


def every_10s(start: float, stop: float) -> list[float]:
    return [float(t) for t in range(int(start), int(stop) + 1, 10)]


# --- the proportional rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "values", "replicas", "expected"),
    [
        ("cpu", {"cpu": 90.0}, 3, 4),  # ceil(3 * 90 / 70) = ceil(3.86)
        ("cpu", {"cpu": 100.0}, 6, 9),  # ceil(6 * 100 / 70) = ceil(8.57)
        ("cpu", {"cpu": 20.0}, 6, 2),  # ceil(6 * 20 / 70) = ceil(1.71)
        ("memory", {"memory": 84.0}, 5, 6),  # 5 * 84 / 70 = 6.0 exactly
        ("memory", {"memory": 14.0}, 10, 2),  # 10 * 14 / 70 = 2.0 exactly
        ("rps", {"rps": 1000.0}, 3, 31),  # ceil(1000 / 33) = ceil(30.3)
        ("rps", {"rps": 165.0}, 3, 5),  # 165 / 33 = 5.0 exactly
        ("rps", {"rps": 10.0}, 10, 1),  # ceil(10 / 33)
    ],
)
def test_each_signal_recommends_ceil_of_current_times_observed_over_target(
    signal, values, replicas, expected
):
    decision = decide(sample(replicas=replicas, **values))
    assert decision.recommendations[signal] == expected


def test_the_largest_recommendation_wins_and_the_reason_names_it():
    # cpu 90 -> 4, memory 100 -> 5, rps 99 -> 3 (on target)
    decision = decide(sample(cpu=90.0, memory=100.0, rps=99.0), config=HPA_ONLY)
    assert decision.recommendations == {"cpu": 4, "memory": 5, "rps": 3}
    assert (decision.action, decision.desired) == ("up", 5)
    assert decision.reason.startswith("up 3 → 5: memory 100.0% on 3 serving, target 70% → 5")


@pytest.mark.parametrize(
    ("signal", "values", "replicas", "expected"),
    [
        ("cpu", {"cpu": 77.0}, 3, 3),  # ratio 1.1: the edge of the band holds
        ("cpu", {"cpu": 77.5}, 3, 4),  # just outside
        ("cpu", {"cpu": 63.0}, 10, 10),  # ratio 0.9 holds
        ("cpu", {"cpu": 62.0}, 10, 9),  # just outside: ceil(8.86)
        ("memory", {"memory": 75.0}, 4, 4),
        ("rps", {"rps": 363.0}, 10, 10),  # 363 req/s on 10 replicas: ratio 1.1
        ("rps", {"rps": 297.0}, 10, 10),  # ratio 0.9
        ("rps", {"rps": 296.0}, 10, 9),
    ],
)
def test_a_signal_within_the_tolerance_band_recommends_the_current_count(signal, values, replicas, expected):
    assert decide(sample(replicas=replicas, **values)).recommendations[signal] == expected


# --- the 70/30 thresholds and hysteresis --------------------------------------------------------------------


def test_scale_up_happens_above_70_percent_utilization():
    decision = decide(sample(cpu=80.0))
    assert (decision.action, decision.desired) == ("up", 4)


def test_utilization_between_30_and_70_never_scales_down():
    # cpu 35 % on 10 replicas asks for 5, but 35 is not below 30: hold for ever.
    decisions = run(tp.Policy(), every_10s(0, 600), lambda now: calm(now, cpu=35.0))
    assert decisions[-1].recommendations["cpu"] == 5
    assert {d.action for d in decisions} == {"hold"}
    assert "hysteresis" in decisions[-1].limits
    assert "cpu 35.0% not below 30%" in decisions[-1].reason


def test_scale_down_happens_once_every_utilization_is_below_30_percent_for_a_window():
    # cpu 29 % -> ceil(10 * 29 / 70) = 5; memory 20 % -> 3; rps 60 -> 2.
    decisions = run(tp.Policy(), every_10s(0, WINDOW), lambda now: calm(now, cpu=29.0))
    assert {d.action for d in decisions[:-1]} == {"hold"}
    assert (decisions[-1].action, decisions[-1].desired) == ("down", 5)


def test_memory_not_below_30_percent_blocks_a_scale_down_too():
    decisions = run(tp.Policy(), every_10s(0, 300), lambda now: calm(now, memory=30.0))
    assert {d.action for d in decisions} == {"hold"}
    assert "memory 30.0% not below 30%" in decisions[-1].reason


# --- triggers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "replicas", "desired", "rule"),
    [
        ({"cpu": 76.0}, 3, 4, "cpu_trigger"),  # inside the tolerance band, above the trigger
        ({"memory": 76.0}, 3, 4, "memory_trigger"),
        ({"rps": 240.0}, 7, 8, "rps_trigger"),  # > 200 and > 7 * 33; within tolerance of 231
        ({"rps": 240.0}, 8, 8, None),  # > 200 but 8 * 33 = 264 carry it: no trigger
        ({"cpu": 74.0}, 3, 3, None),
        ({"rps": 200.0}, 10, 10, None),  # not above
    ],
)
def test_a_crossed_trigger_scales_up_by_at_least_one(values, replicas, desired, rule):
    base = {"rps": 33.0 * replicas, "cpu": 70.0, "memory": 50.0}
    decision = decide(sample(replicas=replicas, **(base | values)))
    assert decision.desired == desired
    if rule:
        assert decision.recommendations[rule] == replicas + 1
        assert "trigger" in decision.reason
    else:
        assert not any(name.endswith("_trigger") for name in decision.recommendations)


def test_a_disabled_trigger_does_nothing():
    assert decide(sample(cpu=76.0), config=replace(DEFAULT, cpu_trigger=None)).action == "hold"


def test_the_cpu_trigger_counts_replicas_still_starting_as_capacity():
    # 3 serving at 80 % of 5: 48 % once the other 2 serve.
    decision = decide(sample(replicas=5, serving=3, cpu=80.0, rps=99.0))
    assert "cpu_trigger" not in decision.recommendations
    assert decision.action == "hold"


# --- emergencies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "replicas", "desired", "rule"),
    [
        ({"error_rate": 0.06}, 3, 7, "error_rate"),  # max(2 * 3, 3 + 4)
        ({"error_rate": 0.06}, 6, 10, "error_rate"),  # max(12, 10) = 12, capped at max_replicas
        ({"error_rate": 0.06}, 4, 8, "error_rate"),
        ({"p95_s": 1.2}, 3, 7, "p95"),
        ({"p95_s": 1.2}, 5, 10, "p95"),
    ],
)
def test_an_emergency_scales_up_by_the_full_step(values, replicas, desired, rule):
    decision = decide(sample(replicas=replicas, rps=33.0 * replicas, **values))
    assert (decision.action, decision.desired, decision.emergency) == ("up", desired, True)
    assert decision.recommendations[rule] == tp.up_limit(replicas)
    assert decision.reason.startswith(f"emergency up {replicas} → {desired}")


@pytest.mark.parametrize("values", [{"error_rate": 0.05}, {"p95_s": 1.0}])
def test_the_emergency_thresholds_themselves_are_not_an_emergency(values):
    decision = decide(sample(**values))
    assert (decision.action, decision.emergency) == ("hold", False)


def test_an_emergency_counts_replicas_still_starting_as_part_of_its_step():
    # An earlier emergency took 3 -> 7; 4 still start. Errors go on until they serve: no second step yet.
    starting = decide(sample(replicas=7, serving=3, error_rate=0.2, cpu=70.0))
    assert (starting.action, starting.emergency) == ("hold", True)
    serving = decide(sample(replicas=7, error_rate=0.2, cpu=70.0, rps=231.0))
    assert (serving.action, serving.desired) == ("up", 10)


def test_zero_serving_replicas_with_traffic_scales_up_as_an_emergency():
    # Overloaded replicas fail their health checks: that must not look like a dead pool.
    decision = decide(sample(replicas=3, serving=0, rps=40.0, cpu=None, memory=None, error_rate=None))
    assert (decision.action, decision.desired, decision.emergency) == ("up", 4, True)
    assert "no replica serving while 40.0 req/s arrive" in decision.reason


def test_zero_serving_replicas_with_traffic_never_ends_below_min_replicas():
    empty = sample(replicas=0, serving=0, rps=5.0, cpu=None, memory=None, error_rate=1.0, p95_s=None)
    config = replace(DEFAULT, min_replicas=6)
    assert decide(empty, config=config).desired == 6
    assert decide(empty).desired == 4  # min 3, emergency step from 0 serving is 4


def test_heavy_traffic_keeps_scaling_up_while_the_new_replicas_start():
    # The request rate is pool-wide: 1000 req/s need 31 replicas whatever is serving yet.
    decision = decide(sample(replicas=7, serving=3, rps=1000.0, cpu=95.0), now=6.0, last_scale_at=0.0)
    assert (decision.action, decision.desired) == ("up", 10)


# --- fast up ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "limit"), [(0, 4), (1, 5), (3, 7), (4, 8), (5, 10), (8, 16)])
def test_one_decision_adds_at_most_100_percent_or_4(current, limit):
    assert tp.up_limit(current) == limit
    config = replace(DEFAULT, min_replicas=0, max_replicas=50)
    decision = decide(sample(replicas=current, rps=5000.0), config=config)
    assert decision.desired == limit
    assert "up_limit" in decision.limits
    assert f"at most max(2 * {current}, {current} + 4) = {limit} per decision" in decision.reason


def test_scale_up_is_not_stabilized():
    policy = tp.Policy()
    run(policy, every_10s(0, 100), lambda now: sample(at=now))
    assert policy.decide("backend", 101.0, sample(at=101.0, cpu=95.0), None).action == "up"


# --- careful down: the stabilization window -----------------------------------------------------------------


def test_a_dip_inside_the_window_does_not_scale_down():
    def load(now: float) -> tp.PoolMetrics:
        dip = 200 <= now < 300  # 100 s of calm between busy spells
        return calm(now, cpu=10.0 if dip else 50.0)

    decisions = run(tp.Policy(), every_10s(0, 400), load)
    assert {d.action for d in decisions} == {"hold"}


def test_after_the_window_it_scales_down_to_the_highest_recommendation_seen_in_it():
    def load(now: float) -> tp.PoolMetrics:
        return calm(now, rps=150.0 if now <= 40 else 60.0)  # 150 req/s -> 5, 60 req/s -> 2 (min 3)

    policy = tp.Policy()
    decisions = run(policy, every_10s(0, WINDOW - 10), load)
    assert {d.action for d in decisions} == {"hold"}
    assert "window_not_full" in decisions[-1].limits
    at_window = policy.decide("backend", WINDOW, load(WINDOW), None)
    assert (at_window.action, at_window.desired) == ("down", 5)
    assert "highest recommendation within the last 120 s is 5" in at_window.reason
    # Once the busy spell has left the window, the lowest is allowed (after the cooldown).
    later = policy.decide("backend", 170.0, load(170.0), WINDOW)
    assert (later.action, later.desired) == ("down", 3)


def test_scale_down_waits_a_full_window_after_the_policy_starts():
    # A restarted monitor has no history: it must not shrink the pool on its first look.
    decisions = run(tp.Policy(), every_10s(0, WINDOW), calm)
    assert [d.action for d in decisions].index("down") == len(decisions) - 1
    assert all("window_not_full" in d.limits for d in decisions[:-1])


def test_a_window_carried_over_lets_a_new_policy_decide_like_the_old_one():
    policy = tp.Policy()
    run(policy, every_10s(0, 100), calm)
    saved = json.loads(json.dumps(policy.window("backend").as_dict()))
    decision, _ = tp.evaluate(DEFAULT, "backend", 120.0, calm(120.0), None, tp.Window.from_dict(saved))
    assert decision == policy.decide("backend", 120.0, calm(120.0), None)
    assert decision.action == "down"


# --- bounds -------------------------------------------------------------------------------------------------


def test_desired_never_goes_above_max_replicas():
    decision = decide(sample(replicas=8, rps=2000.0))
    assert decision.desired == 10
    assert "max_replicas" in decision.limits


def test_scale_down_never_goes_below_min_replicas():
    decisions = run(tp.Policy(), every_10s(0, WINDOW), lambda now: calm(now, rps=1.0, cpu=1.0, memory=1.0))
    assert (decisions[-1].action, decisions[-1].desired) == ("down", 3)


def test_a_pool_at_max_replicas_under_more_load_holds_and_says_so():
    decision = decide(sample(replicas=10, rps=2000.0))
    assert (decision.action, decision.desired) == ("hold", 10)
    assert "capped at max_replicas 10" in decision.reason


def test_a_pool_below_min_replicas_goes_to_it_at_once_even_past_the_up_limit():
    config = replace(DEFAULT, min_replicas=10, max_replicas=20)
    decision = decide(sample(replicas=0, serving=0, rps=0.0, cpu=None, memory=None), config=config)
    assert (decision.action, decision.desired) == ("up", 10)
    assert "min_replicas" in decision.limits


def test_a_pool_above_max_replicas_goes_to_it_at_once():
    decision = decide(sample(replicas=12, cpu=60.0), now=1.0, last_scale_at=0.0)
    assert (decision.action, decision.desired) == ("down", 10)
    assert "max_replicas" in decision.limits


# --- cooldown after a scale event ---------------------------------------------------------------------------


def test_scale_down_is_blocked_for_the_cooldown_after_a_scale_event():
    policy = tp.Policy()
    run(policy, every_10s(0, 200), lambda now: calm(now, cpu=50.0))  # a full window, nothing to do
    event = 205.0
    during = run(policy, [210.0, 220.0, 230.0], calm, last_scale_at=event)
    assert all(d.action == "hold" and "cooldown" in d.limits for d in during)
    assert "last scale event 5 s ago, cooldown 30 s" in during[0].reason
    # The window still remembers cpu 50 % (hold) until 120 s after it ended.
    assert policy.decide("backend", 240.0, calm(240.0), event).limits == ("window",)
    assert policy.decide("backend", 330.0, calm(330.0), event).action == "down"


def test_scale_up_waits_only_the_up_cooldown_after_a_scale_event():
    busy = sample(at=3.0, cpu=95.0)
    held = decide(busy, now=3.0, last_scale_at=0.0)
    assert (held.action, held.limits) == ("hold", ("up_cooldown",))
    assert "a scale-up waits 5 s" in held.reason
    assert decide(replace(busy, at=5.0), now=5.0, last_scale_at=0.0).action == "up"


def test_an_emergency_waits_the_up_cooldown_too():
    assert decide(sample(error_rate=0.5), now=1.0, last_scale_at=0.0).action == "hold"


# --- missing and stale metrics ------------------------------------------------------------------------------


def test_scale_down_never_happens_on_stale_metrics():
    policy = tp.Policy()
    run(policy, every_10s(0, 200), calm)  # fresh and calm: scales down at 120
    stale = policy.decide("backend", 300.0, calm(280.0), None)
    assert (stale.action, stale.limits) == ("hold", ("stale",))
    assert "metrics are 20 s old (stale after 10 s)" in stale.reason


def test_scale_up_never_happens_on_stale_metrics_either():
    # A stale replica count may be wrong, and a scale request is absolute.
    decision = decide(sample(at=0.0, rps=3000.0, error_rate=0.9), now=11.0)
    assert (decision.action, decision.desired) == ("hold", 3)


def test_no_metrics_at_all_changes_nothing_and_reports_the_last_count():
    policy = tp.Policy()
    policy.decide("backend", 0.0, sample(replicas=6, rps=198.0), None)
    decision = policy.decide("backend", 10.0, None, None)
    assert (decision.current, decision.desired, decision.limits) == (6, 6, ("no_metrics",))


@pytest.mark.parametrize("missing", ["rps", "cpu", "memory", "error_rate", "p95_s"])
def test_scale_down_never_happens_with_a_signal_missing(missing):
    decisions = run(tp.Policy(), every_10s(0, 300), lambda now: calm(now, **{missing: None}))
    assert {d.action for d in decisions} == {"hold"}
    assert "missing" in decisions[-1].limits


def test_without_requests_error_rate_and_p95_are_not_needed_to_scale_down():
    decisions = run(
        tp.Policy(), every_10s(0, WINDOW), lambda now: calm(now, rps=0.0, error_rate=None, p95_s=None)
    )
    assert decisions[-1].action == "down"


def test_a_missing_signal_is_skipped_for_a_scale_up():
    decision = decide(sample(cpu=None, memory=None, rps=300.0))
    assert (decision.action, decision.desired) == ("up", 7)


def test_after_stale_metrics_a_scale_down_waits_a_full_window_again():
    policy = tp.Policy()
    run(policy, every_10s(0, 100), calm)
    policy.decide("backend", 110.0, calm(90.0), None)  # stale
    decisions = run(policy, every_10s(120, 230), calm)
    assert {d.action for d in decisions} == {"hold"}
    assert policy.decide("backend", 240.0, calm(240.0), None).action == "down"


# --- replicas still starting --------------------------------------------------------------------------------


def test_replicas_still_starting_count_as_capacity_so_no_second_scale_up():
    # 3 -> 7 happened; the 3 serving replicas still run hot: ceil(3 * 90 / 70) = 4 <= 7.
    decision = decide(sample(replicas=7, serving=3, cpu=90.0, rps=150.0), now=10.0, last_scale_at=0.0)
    assert decision.recommendations["cpu"] == 4
    assert decision.action == "hold"


def test_replicas_still_starting_block_a_scale_down():
    decisions = run(tp.Policy(), every_10s(0, 300), lambda now: replace(calm(now), serving=9))
    assert {d.action for d in decisions} == {"hold"}
    assert "1 of 10 replicas not serving yet" in decisions[-1].reason


# --- decisions are records ----------------------------------------------------------------------------------


def test_a_decision_serializes_to_json_with_its_per_signal_recommendations():
    data = json.loads(json.dumps(decide(sample(cpu=90.0)).as_dict()))
    assert data["action"] == "up" and data["desired"] == 4
    assert data["recommendations"]["cpu"] == 4
    assert data["reason"].startswith("up 3 → 4: ")


def test_evaluate_changes_none_of_its_inputs_and_returns_a_new_window():
    window = tp.Window()
    metrics = sample()
    first = tp.evaluate(DEFAULT, "backend", 0.0, metrics, None, window)
    assert window == tp.Window()
    assert tp.evaluate(DEFAULT, "backend", 0.0, metrics, None, window) == first


def test_each_pool_has_its_own_config_and_window():
    policy = tp.Policy({"frontend": DEFAULT, "backend": replace(DEFAULT, max_replicas=5)})
    assert policy.decide("backend", 0.0, sample(rps=1000.0), None).desired == 5
    assert policy.decide("frontend", 0.0, sample(rps=1000.0), None).desired == 7
    with pytest.raises(ValueError, match="no scaling policy for pool 'db'"):
        policy.decide("db", 0.0, sample(), None)


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"min_replicas": 5, "max_replicas": 4}, "min_replicas <= max_replicas"),
        ({"min_replicas": 2.5}, "min_replicas must be a whole number"),
        ({"scale_down_utilization": 80.0}, "scale_down_utilization < target_utilization"),
        ({"tolerance": 1.0}, "tolerance must be below 1"),
        ({"target_rps_per_replica": 0}, "target_rps_per_replica must be a number above 0"),
        ({"cpu_trigger": -1.0}, "cpu_trigger must be a number above 0 or None"),
        ({"emergency_error_rate": 5.0}, "emergency_error_rate is a share"),
        ({"cooldown_s": math.nan}, "cooldown_s must be a number of 0 or more"),
        ({"max_replicas": True}, "max_replicas must be a whole number"),
    ],
)
def test_an_invalid_config_is_rejected_with_a_clear_message(settings_, message):
    with pytest.raises(ValueError, match=message):
        tp.PolicyConfig(**settings_)


def test_a_config_from_a_mapping_rejects_unknown_settings():
    assert tp.PolicyConfig.from_mapping({"max_replicas": 12}).max_replicas == 12
    with pytest.raises(ValueError, match="unknown scaling policy setting"):
        tp.PolicyConfig.from_mapping({"max_replica": 12})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"replicas": 3, "serving": 4}, "serving .4. cannot exceed replicas .3."),
        ({"replicas": -1, "serving": 0}, "replicas must be a whole number of 0 or more"),
        ({"replicas": 3, "serving": 3, "cpu_percent": math.nan}, "cpu_percent must be a finite number"),
        ({"replicas": 3, "serving": 3, "error_rate": 2.0}, "error_rate is a share"),
    ],
)
def test_invalid_metrics_are_rejected_with_a_clear_message(fields, message):
    with pytest.raises(ValueError, match=message):
        tp.PoolMetrics(at=0.0, **fields)


# --- the worked examples of docs/scaling-policy.md ----------------------------------------------------------


def test_docs_example_a_10x_spike():
    spike = sample(at=0.0, rps=1000.0, cpu=95.0, memory=40.0, error_rate=0.02, p95_s=0.8)
    first = decide(spike)
    assert first.recommendations == {"cpu_trigger": 4, "rps_trigger": 4, "cpu": 5, "memory": 2, "rps": 31}
    assert (first.action, first.desired) == ("up", 7)
    second = decide(replace(spike, at=6.0, replicas=7, serving=3), last_scale_at=0.0)
    assert (second.action, second.desired) == ("up", 10)
    overloaded = decide(replace(spike, replicas=3, error_rate=0.08))
    assert (overloaded.desired, overloaded.emergency) == (7, True)


def test_docs_example_the_calm_after():
    # Busy until t=0 (300 req/s, 500 replica-% of cpu on 10 replicas), then 200 req/s for 30 s, then 90 req/s;
    # 120 replica-% of cpu spread over the replicas; memory is each replica's own footprint, 25 %.
    def load(now: float, replicas: int) -> tp.PoolMetrics:
        rps, cpu_total = (300.0, 500.0) if now < 0 else (200.0 if now < 30 else 90.0, 120.0)
        return sample(
            at=now, replicas=replicas, rps=rps, cpu=cpu_total / replicas, memory=25.0, error_rate=0.001
        )

    policy, replicas, last_scale_at, log = tp.Policy(), 10, -600.0, {}
    for now in every_10s(-120, 300):
        decision = policy.decide("backend", now, load(now, replicas), last_scale_at)
        log[now] = decision
        if decision.action != "hold":  # the caller runs scale.yml and records the event
            replicas, last_scale_at = decision.desired, now

    assert log[0.0].recommendations == {"cpu": 2, "memory": 4, "rps": 7}
    assert log[30.0].recommendations == {"cpu": 2, "memory": 4, "rps": 3}
    assert all(log[t].limits == ("window",) for t in every_10s(0, 110))
    assert (log[120.0].action, log[120.0].desired) == ("down", 7)
    assert [log[t].limits for t in (130.0, 140.0)] == [("cooldown",), ("cooldown",)]
    assert (log[150.0].action, log[150.0].desired) == ("down", 4)
    assert "highest recommendation within the last 120 s is 4" in log[150.0].reason
    assert all(log[t].limits == ("hysteresis",) for t in every_10s(160, 300))
    assert log[300.0].reason == (
        "hold at 4: rps 90.0 on 4 replicas (22.5 each), target 33 each → 3; "
        "no scale-down: cpu 30.0% not below 30%"
    )


def test_docs_example_a_modest_rise():
    decision = decide(sample(cpu=80.0))
    assert decision.recommendations == {"cpu": 4, "memory": 3, "rps": 3, "cpu_trigger": 4}
    assert decision.reason == "up 3 → 4: cpu 80.0% on 3 serving, target 70% → 4"


# --- properties ---------------------------------------------------------------------------------------------

# Biased towards calm, fully serving pools and short windows, so that scale-downs are reachable too.
signal = st.none() | st.floats(0, 3000) | st.floats(0, 100)
utilization = st.none() | st.floats(0, 100) | st.floats(0, 5)
seconds = st.sampled_from([0.0, 5.0, 30.0]) | st.floats(0, 300)


@st.composite
def configs(draw: st.DrawFn) -> tp.PolicyConfig:
    low = draw(st.integers(0, 6))
    target = draw(st.floats(20, 100))
    return tp.PolicyConfig(
        min_replicas=low,
        max_replicas=draw(st.integers(max(low, 1), low + 20)),
        target_utilization=target,
        scale_down_utilization=draw(st.just(min(30.0, target - 1)) | st.floats(0, target - 1)),
        target_rps_per_replica=draw(st.floats(1, 200)),
        rps_trigger=draw(st.none() | st.floats(1, 1000)),
        cpu_trigger=draw(st.none() | st.floats(1, 100)),
        memory_trigger=draw(st.none() | st.floats(1, 100)),
        tolerance=draw(st.floats(0, 0.5)),
        stabilization_window_s=draw(seconds),
        cooldown_s=draw(seconds),
        up_cooldown_s=draw(seconds),
    )


@st.composite
def observations(draw: st.DrawFn, max_replicas: int = 25) -> tuple[float, tp.PoolMetrics, float | None]:
    """(time since the previous decision, the sample, time since the last scale event or None)."""
    replicas = draw(st.integers(0, max_replicas))
    metrics = tp.PoolMetrics(
        at=-draw(st.floats(0, 5) | st.floats(0, 30)),  # its age, made absolute by `absolute` below
        replicas=replicas,
        serving=draw(st.just(replicas) | st.integers(0, replicas)),
        rps=draw(signal),
        cpu_percent=draw(utilization),
        memory_percent=draw(utilization),
        error_rate=draw(st.none() | st.just(0.0) | st.floats(0, 1)),
        p95_s=draw(st.none() | st.just(0.1) | st.floats(0, 5)),
    )
    return draw(seconds), metrics, draw(st.none() | seconds)


@st.composite
def calm_observations(draw: st.DrawFn, max_replicas: int = 25) -> tuple[float, tp.PoolMetrics, float | None]:
    """A pool that a scale-down is due for, unless a signal is knocked out or the sample is old."""
    replicas = draw(st.integers(0, max_replicas))
    values = {"rps": draw(st.floats(0, 5)), "cpu": draw(st.floats(0, 1)), "memory": draw(st.floats(0, 1))}
    knocked_out = draw(st.none() | st.sampled_from(["rps", "cpu", "memory", "error_rate", "p95_s"]))
    if knocked_out:
        values[knocked_out] = None
    metrics = sample(at=-draw(st.floats(0, 30)), replicas=replicas, **values)
    return draw(seconds), metrics, draw(st.none() | seconds)


any_observations = st.lists(observations() | calm_observations(), min_size=1, max_size=30)


def absolute(steps: list) -> list[tuple[float, tp.PoolMetrics, float | None]]:
    """Steps on one clock: each decision after the previous, metrics aged as drawn."""
    now, out = 0.0, []
    for gap, metrics, scaled_ago in steps:
        now += gap
        out.append(
            (now, replace(metrics, at=now + metrics.at), None if scaled_ago is None else now - scaled_ago)
        )
    return out


def decisions_of(config: tp.PolicyConfig, steps: list) -> list[tuple[tp.PoolMetrics, tp.Decision, bool]]:
    policy = tp.Policy(config)
    out = []
    for now, metrics, last in absolute(steps):
        stale = now - metrics.at > config.max_metric_age_s
        out.append((metrics, policy.decide("backend", now, metrics, last), stale))
    return out


@given(configs(), any_observations)
def test_property_desired_is_always_within_the_bounds(config, steps):
    for metrics, decision, stale in decisions_of(config, steps):
        in_bounds = config.min_replicas <= metrics.replicas <= config.max_replicas
        if in_bounds or not stale:
            assert config.min_replicas <= decision.desired <= config.max_replicas


@settings(max_examples=300)  # scale-downs with a signal missing are rare among random inputs
@given(configs(), any_observations)
def test_property_never_below_current_when_a_metric_is_missing_or_stale(config, steps):
    for metrics, decision, stale in decisions_of(config, steps):
        # With no request at all, error rate and p95 have nothing to measure: None is not missing then.
        needed = ("rps", "cpu", "memory") if metrics.rps == 0 else tuple(metrics.signals())
        missing = any(metrics.signals()[name] is None for name in needed)
        if (missing or stale) and metrics.replicas <= config.max_replicas:
            assert decision.desired >= metrics.replicas


@given(configs(), any_observations)
def test_property_the_up_step_never_exceeds_the_up_limit(config, steps):
    for metrics, decision, _ in decisions_of(config, steps):
        current = metrics.replicas
        # Only reaching min_replicas may take a bigger step (the bounds are hard).
        assert decision.desired <= max(tp.up_limit(current), config.min_replicas)


@given(configs(), any_observations)
def test_property_same_inputs_same_decisions(config, steps):
    first = [decision for _, decision, _ in decisions_of(config, steps)]
    assert [decision for _, decision, _ in decisions_of(config, steps)] == first


def flat_run(config: tp.PolicyConfig, replicas: int, steps: int, rng: random.Random) -> list:
    """(now, sample) of a pool at its targets, each signal off by a random share of at most the tolerance.

    Where a trigger sits inside the band (cpu and memory 75 % < 77 % at the defaults), signals stay below it.
    """
    band = config.tolerance
    cpu_cap = min(config.cpu_trigger or math.inf, config.memory_trigger or math.inf)
    rps_cap = max(config.rps_trigger or math.inf, replicas * config.target_rps_per_replica)

    def around(target: float, cap: float) -> float:
        return min(target * (1 + rng.uniform(-band, band)), cap)

    now, out = 0.0, []
    for _ in range(steps):
        now += rng.uniform(1, 15)
        metrics = sample(
            at=now - rng.uniform(0, config.max_metric_age_s),
            replicas=replicas,
            rps=around(replicas * config.target_rps_per_replica, rps_cap),
            cpu=around(config.target_utilization, cpu_cap),
            memory=around(config.target_utilization, cpu_cap),
            error_rate=rng.uniform(0, 0.05),
            p95_s=rng.uniform(0, 1.0),
        )
        out.append((now, metrics))
    return out


@given(
    st.sampled_from([DEFAULT, HPA_ONLY]),
    st.integers(DEFAULT.min_replicas, DEFAULT.max_replicas),
    st.integers(30, 200),
    st.randoms(use_true_random=False),
)
def test_property_a_noisy_flat_signal_within_the_tolerance_never_changes_the_pool(
    config, replicas, steps, rng
):
    policy = tp.Policy(config)
    for now, metrics in flat_run(config, replicas, steps, rng):
        decision = policy.decide("backend", now, metrics, None)
        assert (decision.action, decision.desired) == ("hold", replicas), decision.reason


# --- panic window ---------------------------------------------------------------------------------
# n serving replicas are sized for n * 33 req/s; the panic threshold is twice that.
@pytest.mark.parametrize(
    ("replicas", "serving", "panic_rps", "desired", "panic"),
    [
        (3, 3, 197.0, 3, False),  # below 2 * 99: the stable window decides (rps 99: at target)
        (3, 3, 198.0, 6, True),  # 2x exactly: ceil(198 / 33) = 6
        (4, 4, 264.0, 8, True),  # ceil(264 / 33) = 8
        (3, 3, 297.0, 7, True),  # needs 9; the up limit max(2 * 3, 3 + 4) caps one decision at 7
        (8, 8, 660.0, 10, True),  # needs 20; max_replicas 10
        (5, 2, 140.0, 5, True),  # 3 still starting: 66 sized for; needs 5, as many as exist: hold
        (3, 3, None, 3, False),  # the short window unknown: no panic
    ],
)
def test_demand_over_the_short_window_at_twice_the_capacity_goes_at_once_to_its_size(
    replicas, serving, panic_rps, desired, panic
):
    decision = decide(sample(replicas=replicas, serving=serving, cpu=50.0, panic_rps=panic_rps))
    assert (decision.desired, decision.panic) == (desired, panic), decision.reason
    if decision.action == "up":
        assert decision.reason.startswith(f"panic up {replicas} → {desired}: panic: "), decision.reason


def test_panic_keeps_the_up_cooldown_and_the_bounds():
    metrics = sample(panic_rps=600.0, cpu=50.0)
    assert decide(metrics, last_scale_at=-2.0).action == "hold"  # 2 s after a scale event (cooldown 5 s)
    capped = decide(metrics, config=replace(DEFAULT, max_replicas=5))
    assert capped.desired == 5 and "max_replicas" in capped.limits


def test_after_a_panic_no_scale_down_within_the_stabilization_window():
    policy = tp.Policy(replace(DEFAULT, cooldown_s=0.0))
    for t in range(0, int(WINDOW) + 1, 10):  # a quiet pool of 6 whose window has filled
        policy.decide(
            "backend", float(t), sample(at=float(t), replicas=6, rps=5.0, cpu=5.0, memory=5.0), None
        )
    now = WINDOW + 1
    spike = sample(at=now, replicas=6, rps=5.0, cpu=5.0, memory=5.0, panic_rps=400.0)
    assert policy.decide("backend", now, spike, None).panic
    quiet = sample(at=now + 1, replicas=6, rps=5.0, cpu=5.0, memory=5.0, panic_rps=5.0)
    after = policy.decide("backend", now + 1, quiet, None)
    assert after.action == "hold" and "window" in after.limits, after.reason


def test_panic_off_is_the_stable_window_alone():
    decision = decide(sample(panic_rps=1000.0, cpu=50.0), config=replace(DEFAULT, panic_threshold=None))
    assert decision.action == "hold" and not decision.panic


def test_the_reason_names_the_winner_when_a_panic_and_an_emergency_both_hold():
    # p95 above 1 s: the emergency's full step from 3 is 7; 400 req/s panics for ceil(400 / 33) = 13.
    decision = decide(sample(panic_rps=400.0, p95_s=2.0, cpu=50.0), config=replace(DEFAULT, max_replicas=20))
    assert decision.emergency and decision.panic
    assert decision.reason.startswith("panic up 3 → 7: panic: "), decision.reason  # capped by the up limit
    slow = decide(sample(panic_rps=210.0, p95_s=2.0, cpu=50.0))  # panic asks for 7, as the emergency does
    assert slow.reason.startswith("emergency up 3 → 7: p95 2.00 s"), slow.reason
