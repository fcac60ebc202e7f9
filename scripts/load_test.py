#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Load tests through a stack's load balancer with locust (headless), checked against the seed's criteria.

    load_test.py [scenarios] [options]   the seed's scenarios: 10, 50, 100, 200, 500 and 1000 concurrent
                                         users (closed model), 60 s each -> logs/load-test-results.json
    load_test.py spike [options]         a baseline rate, 10x that rate held, back to the baseline, with the
                                         monitor running -> logs/load-test-spike.json and .png

scripts/load-test.sh runs this with the project's virtual environment. The evaluation (statistics, criteria,
result files, the timeline) is benchkit/stats.py; the users are benchkit/locustfile.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchkit import results
from benchkit import stats as tl
from benchkit.host import ROOT, BenchError, on_sigterm
from benchkit.locust import LocustRun, locust_version
from benchkit.monitor import Monitor
from benchkit.stack import Stack, outside_allowlist, parse_sources

DEFAULT_USERS = (10, 50, 100, 200, 500, 1000)
DEFAULT_SOURCES = "127.0.3.1-127.0.3.16"
# The spike's clients are as the Internet sends them: many addresses, none on the allowlist, each far below
# the per-address limits (a spike of 500 users at 1 req/s: 2.5 connections and req/s per address).
SPIKE_SOURCES = "127.0.5.1-127.0.5.200"
SPIKE_MIN_SOURCES = 100
SHORT = {"duration": 3.0, "baseline_s": 6.0, "spike_s": 14.0, "after_s": 6.0, "baseline_rps": 20.0}
CLOSED_MODEL = "closed: each user sends its next request when the last is answered (locust SiteUser)"
OPEN_MODEL = (
    "approximately open: users x {rate:g} req/s each (locust PacedUser, constant_throughput); a user whose "
    "answer takes longer than {interval:g} s falls behind, and started_rps shows it"
)


def check_spike_sources(sources: list[str], outside: list[str]) -> None:
    """The spike's clients: at least SPIKE_MIN_SOURCES addresses, none exempt from the LB's limits."""
    if len(sources) < SPIKE_MIN_SOURCES:
        raise BenchError(
            f"--sources: the spike needs at least {SPIKE_MIN_SOURCES} client addresses, got {len(sources)}"
        )
    exempt = [s for s in sources if s not in set(outside)]
    if exempt:
        raise BenchError(
            f"--sources: {exempt[0]} (and {len(exempt) - 1} more) is in nginx_lb_allowlist: the spike's"
            " clients must meet the limits every client meets"
        )


# --- scenarios ------------------------------------------------------------------------------------
def run_scenarios(args: argparse.Namespace, stack: Stack, criteria: tl.Criteria, workdir: Path) -> dict:
    results = []
    for users in args.users:
        name = f"users-{users}"
        print(f"scenario {name}: {users} users for {args.duration:g} s ...", flush=True)
        run = LocustRun(workdir, name, stack.url, args.sources, args.paths)
        run.users("SiteUser", users, args.duration)
        result = tl.scenario_result(name, users, args.duration, tl.read_seconds(run.seconds_file), criteria)
        results.append({**result, "generator_cpu_s": round(run.cpu_s, 2)})
    return tl.results_document(results, criteria, meta(stack, args, CLOSED_MODEL))


def meta(stack: Stack, args: argparse.Namespace, model: str) -> dict:
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": f"stack {stack.name}, {stack.url}",
        "model": model,
        "generator": f"locust {locust_version()}",
        "paths": args.paths.split(","),
        "sources": f"{args.sources[0]}-{args.sources[-1]} ({len(args.sources)} addresses)",
    }


# --- the spike ------------------------------------------------------------------------------------
def run_spike(args: argparse.Namespace, stack: Stack, criteria: tl.Criteria, workdir: Path) -> dict:
    phases = tl.spike_phases(
        args.baseline_rps, args.factor, args.baseline_s, args.spike_s, args.after_s, args.user_rate
    )
    before = stack.sizes()
    if not any(before.values()):
        raise BenchError(f"stack {stack.name} has no app containers: bring it up first (make up)")
    print(
        f"spike on stack {stack.name}, {stack.url}: {phases[0].offered_rps:g} req/s for"
        f" {args.baseline_s:g} s, {phases[1].offered_rps:g} req/s for {args.spike_s:g} s,"
        f" {phases[2].offered_rps:g} req/s for {args.after_s:g} s; pools {before}",
        flush=True,
    )
    monitor = None
    if args.monitor:
        settings = json.loads(args.monitor_settings.read_text()) if args.monitor_settings else {}
        settings = {"interval_s": args.monitor_interval, "window_s": args.monitor_window, **settings}
        monitor = Monitor(stack, workdir, **settings).start()
    stages = json.dumps([[p.end_s, p.users] for p in phases])
    env = {"TENFOLD_LOAD_STAGES": stages, "TENFOLD_LOAD_USER_RATE": f"{args.user_rate:g}"}
    run = LocustRun(workdir, "spike", stack.url, args.sources, args.paths, env=env)
    try:
        if monitor:
            monitor.wait_for_lines(2, timeout=60)
        start = run.run(["PacedUser"], limit_s=phases[-1].end_s + 90, shape=True)
    finally:
        if monitor:
            monitor.stop()
        events = stack.events()  # the monitor's scale runs; the restore below records its own elsewhere
        if args.restore:
            stack.restore(before)
    seconds = tl.read_seconds(run.seconds_file)
    rows = tl.timeline(seconds, start, phases, monitor.lines() if monitor else [])
    model = OPEN_MODEL.format(rate=args.user_rate, interval=1 / args.user_rate)
    return tl.spike_document(
        rows,
        tl.evaluate_spike(seconds, start, phases, criteria),
        criteria,
        {
            **meta(stack, args, model),
            "start": start,
            "factor": args.factor,
            "pools_before": before,
            "monitor": bool(monitor),
            "generator_cpu_s": round(run.cpu_s, 2),
            "scale_events": events,
        },
    )


def plot(doc: dict, path: Path) -> None:
    """The spike's timeline: offered, served and failed req/s, p95 against its limit, replicas per pool."""
    rows = doc["timeline"]
    t = [r["t"] for r in rows]
    limit = doc["criteria"]["max_p95_s"]
    pools = sorted({pool for r in rows for pool in r["replicas"]})
    results.plot(
        path,
        f"tenfold spike: {doc.get('target', '')} ({'PASS' if doc['pass'] else 'FAIL'})",
        {
            "req/s": [
                (t, [r["offered_rps"] for r in rows], {"label": "offered req/s", "linestyle": "--"}),
                (t, [r["served_rps"] for r in rows], {"label": "served req/s"}),
                (t, [r["failed_rps"] for r in rows], {"label": "failed req/s", "color": "red"}),
            ],
            "p95 (s)": [
                (t, [r["p95_s"] for r in rows], {"label": "p95"}),
                (t, [limit] * len(t), {"label": "p95 limit", "color": "red", "linestyle": ":"}),
            ],
            "replicas": [
                (t, [r["replicas"].get(p) for r in rows], {"label": p, "step": True}) for p in pools
            ],
        },
        [p["start_s"] for p in doc["phases"]],
    )


# --- the command line -----------------------------------------------------------------------------
def number_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need at least one user count, each >= 1: {text!r}")
    return values


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add = common.add_argument
    add(
        "--vars",
        type=Path,
        help="the stack's variables (like tests/integration/stack.yml); default: the local one",
    )
    sources = (
        f"scenarios: allowlisted (default {DEFAULT_SOURCES}); spike: {SPIKE_MIN_SOURCES}+, none allowlisted"
    )
    add("--sources", help=f"load source addresses; {sources} (default {SPIKE_SOURCES})")
    add("--paths", default="/,/api/work?ms=20", help="paths the users cycle through (default %(default)s)")
    add("--short", action="store_true", help="the short profile (seconds, for tests)")
    add("--out", type=Path, help="result file")
    add(
        "--workdir",
        type=Path,
        help="keep locust's and the monitor's logs here (default: a temporary directory)",
    )
    add("--min-rps", type=float, default=tl.Criteria.min_rps)
    add("--max-p95", type=float, default=tl.Criteria.max_p95_s, help="seconds")
    add("--max-errors", type=float, default=tl.Criteria.max_error_percent, help="percent")
    top = argparse.ArgumentParser(
        prog="load-test.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command")
    scen = sub.add_parser("scenarios", parents=[common], help="the seed's concurrent-user scenarios")
    scen.add_argument(
        "--users", type=number_list, default=list(DEFAULT_USERS), help="comma-separated (10,50,...)"
    )
    scen.add_argument("--duration", type=positive, help="seconds per scenario (default 60; --short: 3)")
    spike = sub.add_parser("spike", parents=[common], help="baseline, 10x spike, back down, with the monitor")
    add = spike.add_argument
    add(
        "--baseline-rps",
        type=positive,
        help="offered req/s before and after the spike (default 50; --short: 20)",
    )
    add("--factor", type=positive, default=10.0, help="the spike's rate / the baseline's (default 10)")
    add("--baseline-s", type=positive, help="seconds of baseline (default 60; --short: 6)")
    add("--spike-s", type=positive, help="seconds of spike (default 120; --short: 14)")
    add("--after-s", type=positive, help="seconds back at the baseline (default 60; --short: 6)")
    add("--user-rate", type=positive, default=1.0, help="req/s of one user (default 1)")
    add("--no-monitor", dest="monitor", action="store_false", help="without the monitor")
    add("--monitor-settings", type=Path, help="JSON merged over the monitor's settings")
    add("--monitor-interval", type=positive, default=2.0, help="seconds (default 2; --short: 1)")
    add("--monitor-window", type=positive, default=10.0, help="seconds (default 10; --short: 5)")
    add("--no-restore", dest="restore", action="store_false", help="leave the pools as the spike left them")
    add("--plot", type=Path, help="PNG of the timeline (default: next to --out)")
    return top


def apply_profile(args: argparse.Namespace) -> None:
    defaults = {"duration": 60.0, "baseline_s": 60.0, "spike_s": 120.0, "after_s": 60.0, "baseline_rps": 50.0}
    for key, value in defaults.items():
        if getattr(args, key, "absent") is None:
            setattr(args, key, SHORT[key] if args.short else value)
    if args.command == "spike" and args.short:
        if "--monitor-interval" not in sys.argv:
            args.monitor_interval = 1.0
        if "--monitor-window" not in sys.argv:
            args.monitor_window = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "scenarios")
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        apply_profile(args)
        criteria = tl.Criteria(args.min_rps, args.max_p95, args.max_errors)
        scratch = tempfile.TemporaryDirectory(prefix="tenfold-load-")
        workdir = args.workdir or Path(scratch.name)
        workdir.mkdir(parents=True, exist_ok=True)
        stack = Stack.from_file(args.vars, workdir)
        spike = args.command == "spike"
        args.sources = parse_sources(args.sources or (SPIKE_SOURCES if spike else DEFAULT_SOURCES))
        missing = outside_allowlist(args.sources, stack.allowlist)
        if spike:
            check_spike_sources(args.sources, missing)
        elif missing:
            print(
                f"warning: {len(missing)} load source(s) ({missing[0]}, ...) are not in nginx_lb_allowlist "
                f"of {stack.name}: the rate limiter will answer them with 429",
                file=sys.stderr,
            )
        out = args.out or ROOT / "logs" / ("load-test-spike.json" if spike else "load-test-results.json")
        with scratch:
            doc = (run_spike if spike else run_scenarios)(args, stack, criteria, workdir)
        problems, table = tl.validate(doc), tl.table(doc["phases" if spike else "scenarios"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        if spike:
            path = args.plot or out.with_suffix(".png")
            plot(doc, path)
            print(f"plot: {path}")
        verdict = "PASS" if doc["pass"] else "FAIL"
        print(f"\n{table}\n\nmodel: {doc['model']}\nresults: {out}\noverall: {verdict}")
        if problems:
            print("result file incomplete: " + "; ".join(problems), file=sys.stderr)
            return 2
        return 0 if doc["pass"] else 1
    except (BenchError, tl.ResultError) as exc:
        print(f"load-test: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("load-test: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
