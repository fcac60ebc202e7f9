# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Statistics and the load test's evaluation: the seed's criteria, result files and the spike's timeline.

Pure functions over recorded data (no network, no Docker), shared by scripts/load_test.py (the runner behind
scripts/load-test.sh) and the benches; tests/unit/test_load_eval.py and test_benchkit.py cover them.

Input is the per-second record that the locust users write (benchkit/locustfile.py): one dict per
wall-clock second `{"t", "started", "ok", "failed", "latencies_ms", "users"}`.
"""

from __future__ import annotations

import json
import math
import operator
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS_VERSION = 1
ENTRY_KEYS = {  # a scenario's, or a spike phase's (which has no duration_s)
    "name": str,
    "users": int,
    "duration_s": (int, float),
    "requests": int,
    "ok": int,
    "failed": int,
    "rps": (int, float),
    "p50_s": (int, float, type(None)),
    "p95_s": (int, float, type(None)),
    "p99_s": (int, float, type(None)),
    "error_percent": (int, float),
    "errors": dict,
    "checks": list,
    "pass": bool,
}
TIMELINE_KEYS = ("t", "offered_rps", "started_rps", "served_rps", "failed_rps", "p95_s", "error_percent")


class ResultError(ValueError):
    """A result file or a record is malformed; the message says where."""


@dataclass(frozen=True)
class Criteria:
    """The seed's validation criteria: at least `min_rps` requests/s, p95 at most `max_p95_s` seconds, at
    most `max_error_percent` % of the requests failed."""

    min_rps: float = 100.0
    max_p95_s: float = 1.0
    max_error_percent: float = 5.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise ResultError(f"criteria: {name} must be a number >= 0, got {value!r}")
        if self.max_error_percent > 100:
            raise ResultError(f"criteria: max_error_percent must be <= 100, got {self.max_error_percent}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Criteria:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ResultError(f"criteria: unknown keys {sorted(unknown)}")
        return cls(**values)


# --- statistics -----------------------------------------------------------------------------------
def median(values: Iterable[float | None]) -> float | None:
    """The median of the values measured (None ones are not); None when there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def spread(values: Iterable[float | None]) -> list[float] | None:
    """[min, median, max] of the values measured; None when there are none."""
    known = [v for v in values if v is not None]
    return [min(known), statistics.median(known), max(known)] if known else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def read_seconds(path: Path) -> list[dict]:
    """The per-second record, merged by second (a second can be written twice around a flush), sorted."""
    merged: dict[int, dict] = {}
    if not path.exists():
        return []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            t = int(entry["t"])
            row = merged.setdefault(
                t, {"t": t, "started": 0, "ok": 0, "failed": 0, "latencies_ms": [], "users": 0, "errors": {}}
            )
            for kind, count in (entry.get("errors") or {}).items():
                row["errors"][str(kind)] = row["errors"].get(str(kind), 0) + int(count)
            row["started"] += int(entry.get("started", 0))
            row["ok"] += int(entry.get("ok", 0))
            row["failed"] += int(entry.get("failed", 0))
            row["latencies_ms"] += [float(v) for v in entry.get("latencies_ms", [])]
            row["users"] = max(row["users"], int(entry.get("users", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultError(f"{path}:{number}: not a per-second record ({exc})") from None
    return [merged[t] for t in sorted(merged)]


def summarize(seconds: Iterable[Mapping[str, Any]], duration_s: float) -> dict[str, Any]:
    """Totals of the seconds given: requests (answered or failed), rate over `duration_s`, percentiles."""
    if duration_s <= 0:
        raise ResultError(f"duration_s must be positive, got {duration_s}")
    ok = failed = 0
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for row in seconds:
        ok += int(row["ok"])
        failed += int(row["failed"])
        latencies += row["latencies_ms"]
        for kind, count in (row.get("errors") or {}).items():
            errors[kind] = errors.get(kind, 0) + count
    requests = ok + failed

    def seconds_of(q: float) -> float | None:
        value = percentile(latencies, q)
        return None if value is None else round(value / 1000.0, 4)

    return {
        "requests": requests,
        "ok": ok,
        "failed": failed,
        "rps": round(requests / duration_s, 2),
        "p50_s": seconds_of(50),
        "p95_s": seconds_of(95),
        "p99_s": seconds_of(99),
        "error_percent": round(100.0 * failed / requests, 3) if requests else 0.0,
        "errors": dict(sorted(errors.items())),
    }


# --- criteria -------------------------------------------------------------------------------------
def checks(stats: Mapping[str, Any], criteria: Criteria, rate: bool = True) -> list[dict[str, Any]]:
    """Each criterion against the stats: {criterion, value, limit, pass}. No request at all fails them all.

    `rate=False` leaves out the minimum rate (a spike's baseline is low by design)."""
    rows = [("rps >= min_rps", stats["rps"], criteria.min_rps, operator.ge)] if rate else []
    rows += [
        ("p95_s <= max_p95_s", stats["p95_s"], criteria.max_p95_s, operator.le),
        (
            "error_percent <= max_error_percent",
            stats["error_percent"],
            criteria.max_error_percent,
            operator.le,
        ),
    ]
    answered = stats["requests"] > 0
    return [
        {
            "criterion": name,
            "value": value,
            "limit": limit,
            "pass": answered and value is not None and ok(value, limit),
        }
        for name, value, limit, ok in rows
    ]


def scenario_result(
    name: str, users: int, duration_s: float, seconds: Sequence[Mapping[str, Any]], criteria: Criteria
) -> dict[str, Any]:
    stats = summarize(seconds, duration_s)
    found = checks(stats, criteria)
    return {
        "name": name,
        "users": users,
        "duration_s": duration_s,
        **stats,
        "checks": found,
        "pass": all(c["pass"] for c in found),
    }


def results_document(
    scenarios: Sequence[Mapping[str, Any]], criteria: Criteria, meta: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "version": RESULTS_VERSION,
        "kind": "scenarios",
        **meta,
        "criteria": asdict(criteria),
        "scenarios": list(scenarios),
        "pass": bool(scenarios) and all(s["pass"] for s in scenarios),
    }


# --- the spike ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    users: int
    offered_rps: float


def spike_phases(
    baseline_rps: float, factor: float, baseline_s: float, spike_s: float, after_s: float, user_rate: float
) -> list[Phase]:
    """Baseline, spike (factor x), and back to the baseline; users = rate / each user's rate."""
    if min(baseline_rps, factor, baseline_s, spike_s, after_s, user_rate) <= 0:
        raise ResultError("spike: rates, factor and durations must be positive")
    base_users = max(1, round(baseline_rps / user_rate))
    spike_users = max(1, round(baseline_rps * factor / user_rate))
    edges = (0.0, baseline_s, baseline_s + spike_s, baseline_s + spike_s + after_s)
    return [
        Phase("baseline", edges[0], edges[1], base_users, base_users * user_rate),
        Phase("spike", edges[1], edges[2], spike_users, spike_users * user_rate),
        Phase("after", edges[2], edges[3], base_users, base_users * user_rate),
    ]


def phase_at(phases: Sequence[Phase], offset_s: float) -> Phase | None:
    for phase in phases:
        if phase.start_s <= offset_s < phase.end_s:
            return phase
    return None


def replicas_at(monitor_lines: Sequence[Mapping[str, Any]], at: float) -> dict[str, int | None]:
    """Replicas per pool in the monitor's last metrics line collected at or before `at` (epoch s)."""
    latest = None
    for line in monitor_lines:
        if line.get("at", math.inf) <= at:
            latest = line
        else:
            break
    if latest is None:
        return {}
    return {pool: values.get("replicas") for pool, values in sorted(latest.get("pools", {}).items())}


def timeline(
    seconds: Sequence[Mapping[str, Any]],
    start: float,
    phases: Sequence[Phase],
    monitor_lines: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One row per second of the run (t = seconds since `start`): offered (what the phase asks for),
    started, served (2xx answered), failed, that second's p95, error %, and the replicas per pool."""
    by_t = {int(row["t"]): row for row in seconds}
    lines = sorted(monitor_lines, key=lambda line: line.get("at", 0))
    end = phases[-1].end_s if phases else 0
    rows = []
    for offset in range(math.ceil(end)):
        t = int(start) + offset
        row = by_t.get(t, {"ok": 0, "failed": 0, "started": 0, "latencies_ms": []})
        phase = phase_at(phases, offset)
        done = row["ok"] + row["failed"]
        p95 = percentile(row["latencies_ms"], 95)
        rows.append(
            {
                "t": offset,
                "phase": phase.name if phase else None,
                "offered_rps": phase.offered_rps if phase else 0.0,
                "started_rps": row["started"],
                "served_rps": row["ok"],
                "failed_rps": row["failed"],
                "p95_s": None if p95 is None else round(p95 / 1000.0, 4),
                "error_percent": round(100.0 * row["failed"] / done, 3) if done else 0.0,
                "replicas": replicas_at(lines, t + 1),
            }
        )
    return rows


def evaluate_spike(
    seconds: Sequence[Mapping[str, Any]], start: float, phases: Sequence[Phase], criteria: Criteria
) -> list[dict[str, Any]]:
    """Each phase's totals against the criteria; the minimum rate applies to the spike phase only."""
    found = []
    for phase in phases:
        inside = [r for r in seconds if phase.start_s <= r["t"] - int(start) < phase.end_s]
        stats = summarize(inside, phase.end_s - phase.start_s)
        result = checks(stats, criteria, rate=phase.name == "spike")
        found.append(
            {
                **asdict(phase),
                **stats,
                "checks": result,
                "pass": all(c["pass"] for c in result),
            }
        )
    return found


def spike_document(
    rows: Sequence[Mapping[str, Any]],
    phases: Sequence[Mapping[str, Any]],
    criteria: Criteria,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "version": RESULTS_VERSION,
        "kind": "spike",
        **meta,
        "criteria": asdict(criteria),
        "phases": list(phases),
        "timeline": list(rows),
        "pass": bool(phases) and all(p["pass"] for p in phases),
    }


def validate(doc: Mapping[str, Any]) -> list[str]:
    """What is missing or inconsistent in a result document, scenarios or spike ([] when complete and right).

    Beyond the keys and types, each entry's pass must be what the criteria in the file give for its figures,
    and the document's pass its entries' together; a spike has its three phases and a row per second."""
    spike = doc.get("kind") == "spike"
    entries = "phases" if spike else "scenarios"
    required = ["version", "kind", "generated_at", "target", "model", "criteria", entries, "pass"]
    problems = [f"missing {key}" for key in [*required, *(["timeline"] if spike else [])] if key not in doc]
    if problems or doc["kind"] not in ("scenarios", "spike"):
        return problems or [f"kind is {doc['kind']!r}, not 'scenarios' or 'spike'"]
    try:
        criteria = Criteria.from_dict(doc["criteria"])
    except (ResultError, TypeError) as exc:
        return [str(exc)]
    if not doc[entries]:
        problems.append(f"no {entries[:-1]}")
    keys = {key: kind for key, kind in ENTRY_KEYS.items() if not (spike and key == "duration_s")}
    for index, entry in enumerate(doc[entries]):
        where = f"{entries[:-1]} {index} ({entry.get('name', '?')})"
        wrong = [f"{where}: missing {key}" for key in keys if key not in entry]
        wrong += [
            f"{where}: {key} is {type(entry[key]).__name__}"
            for key, kind in keys.items()
            if key in entry
            and (not isinstance(entry[key], kind) or (isinstance(entry[key], bool) and kind is not bool))
        ]
        if wrong:
            problems += wrong
            continue
        if entry["ok"] + entry["failed"] != entry["requests"]:
            problems.append(f"{where}: ok + failed != requests")
        expected = checks(entry, criteria, rate=not spike or entry["name"] == "spike")
        if [c["pass"] for c in expected] != [c["pass"] for c in entry["checks"]]:
            problems.append(f"{where}: checks disagree with the criteria")
        if entry["pass"] != all(c["pass"] for c in expected):
            problems.append(f"{where}: pass is {entry['pass']}, the criteria say {not entry['pass']}")
    if spike:
        names = [p.get("name") for p in doc["phases"]]
        if names != ["baseline", "spike", "after"]:
            problems.append(f"phases are {names}, not baseline, spike, after")
        seconds = math.ceil(doc["phases"][-1].get("end_s", 0)) if doc["phases"] else 0
        if len(doc["timeline"]) != seconds:
            problems.append(f"timeline has {len(doc['timeline'])} seconds, the phases {seconds}")
        missing = {k for row in doc["timeline"] for k in (*TIMELINE_KEYS, "replicas") if k not in row}
        problems += [f"timeline: missing {key}" for key in sorted(missing)]
    overall = bool(doc[entries]) and all(e.get("pass") is True for e in doc[entries])
    if doc["pass"] != overall:
        problems.append(f"pass is {doc['pass']}, the {entries} say {overall}")
    return problems


# --- output ---------------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def table(scenarios: Sequence[Mapping[str, Any]]) -> str:
    """The terminal summary: one line per scenario (or spike phase)."""
    head = (
        f"{'scenario':<12} {'users':>6} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'errors %':>8}  result"
    )
    lines = [head, "-" * len(head)]
    for s in scenarios:
        failed = [c["criterion"].split(" ")[0] for c in s["checks"] if not c["pass"]]
        verdict = "PASS" if s["pass"] else "FAIL (" + ", ".join(failed) + ")"
        lines.append(
            f"{s['name']:<12} {s['users']:>6} {s['rps']:>8.1f} {_ms(s['p50_s']):>7} {_ms(s['p95_s']):>7} "
            f"{_ms(s['p99_s']):>7} {s['error_percent']:>8.2f}  {verdict}"
        )
    return "\n".join(lines)
