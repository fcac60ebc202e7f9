"""benchkit.stats on recorded data: statistics, the criteria, result files, the spike timeline.

The recorded files in data/load/ come from real short runs of scripts/load-test.sh against a test stack:
100 users for 3 s (passes), 1000 users for 3 s (its p95 is far above 1 s: must fail), and a short spike
(20 -> 200 -> 20 req/s) with the monitor's metrics lines (trimmed to the replica counts).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import load_test
import pytest
from benchkit import stats as tl

DATA = Path(__file__).resolve().parent / "data" / "load"
META = {"generated_at": "2026-12-01T13:49:00Z", "target": "stack t, https://127.0.0.1:1", "model": "closed"}


def second(t: int, ok: int = 0, failed: int = 0, latencies=(), started: int | None = None) -> dict:
    return {
        "t": t,
        "started": ok + failed if started is None else started,
        "ok": ok,
        "failed": failed,
        "latencies_ms": list(latencies),
        "users": 1,
    }


def recorded(name: str) -> list[dict]:
    return tl.read_seconds(DATA / f"{name}.seconds.jsonl")


# --- statistics -----------------------------------------------------------------------------------
def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert tl.percentile(values, 50) == 50
    assert tl.percentile(values, 95) == 95
    assert tl.percentile(values, 99) == 99
    assert tl.percentile([7.0], 95) == 7.0
    assert tl.percentile([], 95) is None


def test_summarize_counts_failures_and_rates_over_the_duration():
    stats = tl.summarize(
        [second(1, ok=90, latencies=[10] * 90), second(2, ok=5, failed=5, latencies=[2000] * 10)], 2
    )
    assert stats["requests"] == 100 and stats["ok"] == 95 and stats["failed"] == 5
    assert stats["rps"] == 50.0
    assert stats["error_percent"] == 5.0
    assert stats["p50_s"] == 0.01 and stats["p95_s"] == 2.0


def test_failures_are_counted_by_kind():
    rows = [
        {
            **second(1, ok=1, failed=3, latencies=[1] * 4),
            "errors": {"http 429": 2, "ConnectionRefusedError": 1},
        },
        {**second(2, failed=1, latencies=[1]), "errors": {"http 429": 1}},
    ]
    assert tl.summarize(rows, 2)["errors"] == {"ConnectionRefusedError": 1, "http 429": 3}


def test_read_seconds_merges_a_second_written_twice_and_rejects_garbage(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = [
        second(5, ok=1, latencies=[3]),
        second(4, ok=2, latencies=[1, 2]),
        second(5, failed=1, latencies=[9]),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = tl.read_seconds(path)
    assert [r["t"] for r in rows] == [4, 5]
    assert rows[1]["ok"] == 1 and rows[1]["failed"] == 1 and rows[1]["latencies_ms"] == [3, 9]
    path.write_text('{"t": 1, "ok": 1}\nnot json\n')
    with pytest.raises(tl.ResultError, match=r"s.jsonl:2"):
        tl.read_seconds(path)


# --- criteria -------------------------------------------------------------------------------------
def test_the_seed_criteria_are_the_defaults_and_bad_ones_are_refused():
    assert tl.Criteria() == tl.Criteria(min_rps=100.0, max_p95_s=1.0, max_error_percent=5.0)
    for bad in ({"min_rps": -1}, {"max_p95_s": "1"}, {"max_error_percent": 101}, {"max_error_percent": True}):
        with pytest.raises(tl.ResultError):
            tl.Criteria(**bad)
    with pytest.raises(tl.ResultError, match="unknown"):
        tl.Criteria.from_dict({"max_p99_s": 1})


def test_a_recorded_run_within_the_criteria_passes():
    result = tl.scenario_result("users-100", 100, 3.0, recorded("users-100-pass"), tl.Criteria())
    assert result["rps"] >= 100 and result["p95_s"] <= 1.0 and result["error_percent"] <= 5
    assert result["pass"] is True
    assert all(c["pass"] for c in result["checks"])


def test_a_recorded_run_with_a_slow_p95_must_fail_on_p95_alone():
    result = tl.scenario_result("users-1000", 1000, 3.0, recorded("users-1000-slow"), tl.Criteria())
    assert result["p95_s"] > 1.0
    assert result["pass"] is False
    failed = [c["criterion"] for c in result["checks"] if not c["pass"]]
    assert failed == ["p95_s <= max_p95_s"]
    # The same recording passes when the criteria allow it: the verdict follows the criteria given.
    assert tl.scenario_result("users-1000", 1000, 3.0, recorded("users-1000-slow"), tl.Criteria(max_p95_s=5))[
        "pass"
    ]


@pytest.mark.parametrize(
    ("rows", "duration", "failing"),
    [
        ([second(1, ok=50, latencies=[5] * 50)], 1, ["rps >= min_rps"]),  # 50 req/s: too few
        ([second(1, ok=94, failed=6, latencies=[5] * 100)], 1, ["error_percent <= max_error_percent"]),
        ([second(1, ok=200, latencies=[5] * 94 + [1001] * 106)], 1, ["p95_s <= max_p95_s"]),
        ([], 1, ["rps >= min_rps", "p95_s <= max_p95_s", "error_percent <= max_error_percent"]),  # no answer
    ],
)
def test_each_criterion_fails_on_its_own(rows, duration, failing):
    result = tl.scenario_result("s", 1, duration, rows, tl.Criteria())
    assert [c["criterion"] for c in result["checks"] if not c["pass"]] == failing
    assert result["pass"] is False


def test_limits_are_inclusive():
    rows = [second(1, ok=95, failed=5, latencies=[1000] * 100)]
    result = tl.scenario_result("edge", 1, 1, rows, tl.Criteria())
    assert result["rps"] == 100 and result["p95_s"] == 1.0 and result["error_percent"] == 5.0
    assert result["pass"] is True


# --- result files ---------------------------------------------------------------------------------
def scenarios_doc() -> dict:
    criteria = tl.Criteria()
    scenarios = [
        tl.scenario_result("users-100", 100, 3.0, recorded("users-100-pass"), criteria),
        tl.scenario_result("users-1000", 1000, 3.0, recorded("users-1000-slow"), criteria),
    ]
    return json.loads(json.dumps(tl.results_document(scenarios, criteria, META)))


def test_a_complete_results_file_validates_and_fails_overall_when_one_scenario_fails():
    doc = scenarios_doc()
    assert tl.validate(doc) == []
    assert [s["pass"] for s in doc["scenarios"]] == [True, False]
    assert doc["pass"] is False


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.pop("criteria"), "missing criteria"),
        (lambda d: d["scenarios"][0].pop("p95_s"), "missing p95_s"),
        (lambda d: d["scenarios"][0].update(rps="fast"), "rps is str"),
        (lambda d: d["scenarios"][1].update({"pass": True}), "pass is True, the criteria say False"),
        (lambda d: d.update({"pass": True}), "the scenarios say False"),
        (lambda d: d["scenarios"][0].update(ok=1), "ok + failed != requests"),
        (lambda d: d.update(scenarios=[]), "no scenario"),
        (lambda d: d["criteria"].update(max_p95_s=10), "pass is False, the criteria say True"),
    ],
)
def test_an_incomplete_or_inconsistent_results_file_is_caught(change, problem):
    doc = copy.deepcopy(scenarios_doc())
    change(doc)
    assert any(problem in p for p in tl.validate(doc)), tl.validate(doc)


def test_the_terminal_table_has_a_line_per_scenario_with_its_verdict():
    table = tl.table(scenarios_doc()["scenarios"]).splitlines()
    assert len(table) == 4
    assert table[2].startswith("users-100") and table[2].endswith("PASS")
    assert table[3].startswith("users-1000") and table[3].endswith("FAIL (p95_s)")


# --- the spike ------------------------------------------------------------------------------------
RECORDED_PHASES = tl.spike_phases(20, 10, 6, 14, 6, 1.0)  # what the recorded spike ran


def spike_doc(criteria=None) -> dict:
    criteria = criteria or tl.Criteria()
    seconds = recorded("spike")
    start = float((DATA / "spike.seconds.jsonl.start").read_text())
    lines = [json.loads(line) for line in (DATA / "spike.monitor-metrics.jsonl").read_text().splitlines()]
    rows = tl.timeline(seconds, start, RECORDED_PHASES, lines)
    phases = tl.evaluate_spike(seconds, start, RECORDED_PHASES, criteria)
    return json.loads(json.dumps(tl.spike_document(rows, phases, criteria, META)))


def test_spike_phases_size_users_from_the_rates():
    phases = tl.spike_phases(50, 10, 60, 120, 60, 1.0)
    assert [(p.name, p.start_s, p.end_s, p.users, p.offered_rps) for p in phases] == [
        ("baseline", 0, 60, 50, 50),
        ("spike", 60, 180, 500, 500),
        ("after", 180, 240, 50, 50),
    ]
    assert tl.spike_phases(50, 10, 1, 1, 1, 2.0)[1].users == 250
    with pytest.raises(tl.ResultError):
        tl.spike_phases(50, 0, 1, 1, 1, 1.0)


def test_the_recorded_spike_gives_a_timeline_second_by_second_with_replicas():
    doc = spike_doc()
    assert tl.validate(doc) == []
    rows = doc["timeline"]
    assert len(rows) == 26 and [r["t"] for r in rows] == list(range(26))
    assert {r["phase"] for r in rows[:6]} == {"baseline"} and {r["phase"] for r in rows[6:20]} == {"spike"}
    assert [r["offered_rps"] for r in rows[5:7]] == [20, 200]
    served = sum(r["served_rps"] for r in rows)
    assert served == sum(p["ok"] for p in doc["phases"])
    # The monitor scaled the backend 3 -> 4 during the recorded run; the timeline shows when.
    backend = [r["replicas"]["backend"] for r in rows]
    assert backend[0] == 3 and backend[-1] == 4 and backend == sorted(backend)
    assert all(r["replicas"]["frontend"] == 3 for r in rows)


def test_the_recorded_spike_passes_and_fails_when_the_criteria_are_tighter():
    doc = spike_doc()
    assert [p["name"] for p in doc["phases"]] == ["baseline", "spike", "after"]
    assert all(p["pass"] for p in doc["phases"]) and doc["pass"] is True
    # The minimum rate applies to the spike only (the baseline is 20 req/s by design).
    assert [len(p["checks"]) for p in doc["phases"]] == [2, 3, 2]
    strict = spike_doc(tl.Criteria(max_p95_s=0.2))
    assert strict["pass"] is False
    assert [p["pass"] for p in strict["phases"]] == [True, False, False]
    assert tl.validate(strict) == []


def test_an_incomplete_spike_file_is_caught():
    for change, problem in [
        (lambda d: d.pop("timeline"), "missing timeline"),
        (lambda d: d["timeline"].pop(), "timeline has 25 seconds"),
        (lambda d: d["timeline"][3].pop("p95_s"), "missing p95_s"),
        (lambda d: d["phases"][1].update({"pass": False}), "pass is False, the criteria say True"),
        (lambda d: d["phases"].pop(), "not baseline, spike, after"),
    ]:
        doc = spike_doc()
        change(doc)
        assert any(problem in p for p in tl.validate(doc)), (problem, tl.validate(doc))


def test_replicas_come_from_the_last_monitor_line_before_the_second():
    lines = [
        {"at": 10.0, "pools": {"backend": {"replicas": 3}}},
        {"at": 12.5, "pools": {"backend": {"replicas": 5}}},
    ]
    assert tl.replicas_at(lines, 9.9) == {}
    assert tl.replicas_at(lines, 12.0) == {"backend": 3}
    assert tl.replicas_at(lines, 13.0) == {"backend": 5}


def test_the_plot_is_a_png(tmp_path):
    path = tmp_path / "spike.png"
    load_test.plot(spike_doc(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
