#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The stack under load, on a stack that is up with 3 frontend and 3 backend replicas and the load sources
in its nginx_lb_allowlist: the LB against a backend reached directly, the seed's scenarios and the spike of
scripts/load-test.sh (the pools go back to their sizes afterwards). Run it alone on the machine.

How it measures and what each figure means: the doc's section "Load tests and The 10x spike" (its template:
docs/benchmarks/load.md.j2). Every load and wait is bounded. --write-docs writes docs/benchmarks/load.json and
renders the doc.

    flock /tmp/tenfold-heavy.lock .venv/bin/python scripts/bench_load.py --vars STACK.yml --write-docs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import load_test as lt
from benchkit import host, results
from benchkit import stats as tl
from benchkit.host import BenchError
from benchkit.locust import LocustRun, locust_version
from benchkit.stack import Stack, outside_allowlist, parse_sources

WATCHED = ("scripts", "monitor", "collections")
PLOT = host.ROOT / "docs" / "benchmarks-spike.png"
SLICE_S = 20


NUMBERS = {  # the bench's number options: default, what it is
    "--duration": (60.0, "seconds per scenario"),
    "--direct-seconds": (20.0, "seconds per direct and LB run"),
    "--baseline-rps": (50.0, "the spike's baseline, req/s"),
    "--baseline-s": (60.0, "seconds of baseline"),
    "--spike-s": (120.0, "seconds of spike"),
    "--after-s": (60.0, "seconds back at the baseline"),
}


def failed_checks(result: dict) -> list[str]:
    return [c["criterion"].split(" ")[0] for c in result["checks"] if not c["pass"]]


def direct_vs_lb(args: argparse.Namespace, stack: Stack, workdir: Path) -> list[dict]:
    found = []
    for users in (10, 50):
        for how, url in (("direct", f"http://127.0.0.1:{stack.port('backend', 1)}"), ("LB", stack.url)):
            run = LocustRun(workdir, f"{how}-{users}", url, args.sources, "/api/whoami")
            busy0 = host.machine_cpu()
            run.users("SiteUser", users, args.direct_seconds)
            stats = tl.summarize(tl.read_seconds(run.seconds_file), args.direct_seconds)
            busy = host.busy_share(busy0, host.machine_cpu())
            found.append({"users": users, "how": how, **stats, "busy": busy})
            print(f"{how} {users} users: {stats['rps']} req/s, p50 {stats['p50_s']} s", flush=True)
    return found


def lb_added(direct: list[dict]) -> list[dict]:
    """LB minus direct, per number of users."""
    by = {(d["how"], d["users"]): d for d in direct}
    added = []
    for users in (10, 50):
        a, b = by.get(("direct", users)), by.get(("LB", users))
        if a and b and a["p50_s"] is not None and b["p50_s"] is not None:
            added.append({"users": users, "p50_s": b["p50_s"] - a["p50_s"], "p95_s": b["p95_s"] - a["p95_s"]})
    return added


def spike_figures(doc: dict) -> dict:
    """The spike's result file as the doc shows it: phases, peaks, scale runs, slices of the timeline."""
    rows, phases = doc["timeline"], doc["phases"]
    first_up = {}
    for pool in ("frontend", "backend"):
        up = [r["t"] for r in rows if (r["replicas"].get(pool) or 0) > doc["pools_before"].get(pool, 0)]
        first_up[pool] = up[0] - phases[1]["start_s"] if up else None
    slices = []
    for first in range(0, len(rows), SLICE_S):
        part = rows[first : first + SLICE_S]
        p95 = sorted(r["p95_s"] for r in part if r["p95_s"] is not None)
        slices.append(
            {
                "seconds": f"{first}-{first + len(part)}",
                "phase": "/".join(dict.fromkeys(str(r["phase"]) for r in part)),
                "offered_rps": sum(r["offered_rps"] for r in part) / len(part),
                "served_rps": sum(r["served_rps"] for r in part) / len(part),
                "p95_median_s": p95[len(p95) // 2] if p95 else None,
                "p95_worst_s": p95[-1] if p95 else None,
                "frontend": part[-1]["replicas"].get("frontend", "-"),
                "backend": part[-1]["replicas"].get("backend", "-"),
            }
        )
    tail = [r for r in rows if r["phase"] == "after" and r["served_rps"] > 2 * phases[2]["offered_rps"]]
    span = (
        f"second {tail[0]['t']}"
        if len(tail) == 1
        else f"seconds {tail[0]['t']}-{tail[-1]['t']}"
        if tail
        else ""
    )
    runs = [e for e in doc["scale_events"] if e.get("trigger") == "monitor"]
    return {
        "factor": doc["factor"],
        "sources": doc["sources"],
        "model": doc["model"].removeprefix("approximately open: "),
        "phases": [
            {
                **{
                    k: p[k]
                    for k in ("name", "offered_rps", "p50_s", "p95_s", "p99_s", "error_percent", "pass")
                },
                "served_rps": p["ok"] / (p["end_s"] - p["start_s"]),
                "seconds": p["end_s"] - p["start_s"],
                "failed": failed_checks(p),
            }
            for p in phases
        ],
        "pass": doc["pass"],
        "worst_p95_s": max((r["p95_s"] for r in rows if r["p95_s"] is not None), default=None),
        "peak": {pool: max((r["replicas"].get(pool) or 0) for r in rows) for pool in ("frontend", "backend")},
        "first_up": first_up,
        "scale_runs": [describe_run(e) for e in runs],
        "generator_cpu_s": doc["generator_cpu_s"],
        "slice_s": SLICE_S,
        "slices": slices,
        "tail": {"span": span, "served_rps": [r["served_rps"] for r in tail]} if tail else None,
    }


def describe_run(event: dict) -> str:
    moved = [
        f"{p['pool']} {p['current']}->{p['target']}"
        for p in event.get("pools", [])
        if p["current"] != p["target"]
    ]
    return f"{', '.join(moved) or 'no change'} in {event.get('duration_s', 0):.0f} s ({event.get('result')})"


def measure_all(args: argparse.Namespace, workdir: Path) -> dict:
    stack = Stack.from_file(args.vars, workdir)
    args.sources = parse_sources(args.sources)
    if outside_allowlist(args.sources, stack.allowlist):
        raise BenchError(f"the load sources must be in nginx_lb_allowlist of {args.vars}")
    if stack.sizes() != {"frontend": 3, "backend": 3}:
        raise BenchError(
            f"stack {stack.name} must run 3 frontend and 3 backend replicas, has {stack.sizes()}"
        )
    (workdir / "direct").mkdir(exist_ok=True)
    direct = direct_vs_lb(args, stack, workdir / "direct")
    ns = argparse.Namespace(
        users=args.users, duration=args.duration, sources=args.sources, paths="/,/api/work?ms=20"
    )
    (workdir / "scenarios").mkdir(exist_ok=True)
    scenarios = lt.run_scenarios(ns, stack, tl.Criteria(), workdir / "scenarios")
    print(tl.table(scenarios["scenarios"]), flush=True)
    spike_sources = parse_sources(lt.SPIKE_SOURCES)
    lt.check_spike_sources(spike_sources, outside_allowlist(spike_sources, stack.allowlist))
    spike_args = {
        "baseline_rps": args.baseline_rps,
        "factor": 10.0,
        "baseline_s": args.baseline_s,
        "user_rate": 1.0,
    }
    spike_args |= {
        "spike_s": args.spike_s,
        "after_s": args.after_s,
        "monitor": True,
        "monitor_settings": None,
    }
    spike_args |= {"monitor_interval": 2.0, "monitor_window": 10.0, "restore": True, "sources": spike_sources}
    spike = lt.run_spike(argparse.Namespace(**{**vars(ns), **spike_args}), stack, tl.Criteria(), workdir)
    print(tl.table(spike["phases"]), flush=True)
    problems = tl.validate(scenarios) + tl.validate(spike)
    if problems:
        raise BenchError("incomplete results: " + "; ".join(problems))
    lt.plot(spike, PLOT if args.write_docs else workdir / PLOT.name)
    scenario_keys = ("users", "rps", "p50_s", "p95_s", "p99_s", "error_percent", "pass")
    return {
        "sources": scenarios["sources"],
        "criteria": scenarios["criteria"],
        "duration_s": args.duration,
        "direct_seconds": args.direct_seconds,
        "machine_full": any(d["busy"] is not None and d["busy"] > 0.95 for d in direct),
        "scenarios": [
            {
                **{k: s[k] for k in scenario_keys},
                "cpu_per_request_ms": s["generator_cpu_s"] / s["requests"] * 1000 if s["requests"] else None,
                "failed": failed_checks(s),
            }
            for s in scenarios["scenarios"]
        ],
        "direct": [{k: d[k] for k in (*scenario_keys[:-1], "how", "busy")} for d in direct],
        "lb_added": lb_added(direct),
        "spike": spike_figures(spike),
    }


def main() -> int:
    parser = results.parser(__doc__, "load", NUMBERS)
    parser.add_argument(
        "--vars", type=Path, required=True, help="the stack's variables (like tests/integration/stack.yml)"
    )
    parser.add_argument(
        "--users", type=lt.number_list, default=list(lt.DEFAULT_USERS), help="the scenarios' users"
    )
    parser.add_argument("--sources", default=lt.DEFAULT_SOURCES, help="the scenarios' allowlisted addresses")
    parser.add_argument(
        "--workdir", type=Path, help="where the runs' files go (default: a new temporary one)"
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tenfold-bench-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    machine = host.machine(WATCHED, locust=locust_version())  # what ran, before anything changes
    return results.run(
        "load", __file__, machine, workdir, args.write_docs, lambda: measure_all(args, workdir)
    )


if __name__ == "__main__":
    sys.exit(main())
