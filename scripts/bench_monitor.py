#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The monitor on a stack of its own (`tenfoldmon`): its overhead (CPU, RSS, the Docker engine's CPU) at
intervals of 2 s and 1 s, and, `--rounds` times, how fast it decides and a new replica serves after a spike.

How it measures and what each figure means: the doc's section "Monitor" (its template:
docs/benchmarks/monitor.md.j2). Every load and wait is bounded; what it brings up it removes again, also on
Ctrl-C or SIGTERM. --write-docs writes docs/benchmarks/monitor.json and renders the doc.

    .venv/bin/python scripts/bench_monitor.py --rounds 3 --write-docs
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
from benchkit import host, results
from benchkit.host import BenchError, busy_share, machine_cpu
from benchkit.load import Load
from benchkit.monitor import Monitor
from benchkit.stack import Stack
from benchkit.stats import median, spread

STACK, BASE = "tenfoldmon", 47000
WATCHED = ("monitor", "collections")  # what the monitor runs: uncommitted changes there are named in the doc
LIGHT_PATHS, LIGHT_SOURCES = ["/api/whoami", "/whoami"], [f"127.0.1.{i}" for i in range(10, 14)]
# Reaction: the integration suite's spike (tests/integration/test_monitor.py), a baseline, a probe.
SPIKE_PATH, SPIKE_SOURCES = "/api/work?ms=50", [f"127.0.2.{i}" for i in range(20, 32)]
BASELINE_SOURCES, PROBE_SOURCE = ["127.0.2.10", "127.0.2.11"], "127.0.0.40"
POLICY = {"min_replicas": 3, "max_replicas": 10, "target_rps_per_replica": 15.0}
WINDOW_S = 5.0
# Targets of the issue "The auto-scaler", section Benchmark.
TARGET_CPU_PERCENT, TARGET_RSS_MB, TARGET_DECISION_S = 2.0, 60.0, 5.0
SLICE_S = 10.0  # CPU % is also given per slice of this many seconds
POLL_S = 0.1  # how often the script reads the monitor's metrics log
MB = 1_000_000
SPREAD = ("decision_s", "tick_s", "serving_s", "decision_to_serving_s")  # min / median / max over the rounds


NUMBERS = {  # the bench's number options: default, what it is
    "--rounds": (3, "spike rounds"),
    "--window": (60.0, "seconds measured per interval"),
    "--warmup": (12.0, "seconds before measuring"),
    "--light-rate": (20.0, "req/s during the overhead"),
    "--baseline-rate": (10.0, "req/s before the spike"),
    "--spike-rate": (110.0, "req/s of the spike"),
    "--probe-rate": (10.0, "probe req/s"),
    "--spike-seconds": (90.0, "longest a spike lasts"),
}


def process_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def engine_cpu() -> float | None:
    """CPU seconds of dockerd and containerd so far (they answer the monitor's stats calls)."""
    try:
        engine = [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("dockerd", "containerd")]
        return sum(p.cpu_times().user + p.cpu_times().system for p in engine) if engine else None
    except psutil.Error:
        return None


def per_core(before: float | None, after: float | None, seconds: float) -> float | None:
    return None if before is None or after is None else (after - before) / seconds * 100.0


# --- 1. overhead ----------------------------------------------------------------------------------
def measure_baseline(seconds: float) -> dict:
    """The Docker engine's CPU and the machine's over `seconds` of the light load, without a monitor."""
    cpu0, busy0 = engine_cpu(), machine_cpu()
    time.sleep(seconds)
    return {
        "engine_cpu_percent": per_core(cpu0, engine_cpu(), seconds),
        "busy": busy_share(busy0, machine_cpu()),
    }


def measure_overhead(stack: Stack, interval: float, args: argparse.Namespace) -> dict:
    with Monitor(
        stack, stack.workdir / f"overhead-{interval:g}s", interval_s=interval, dry_run=True
    ) as monitor:
        process = psutil.Process(monitor.proc.pid)
        # Warm-up: imports, the first collections, the traffic window filling (10 s by default).
        monitor.wait_for_lines(2, timeout=60)
        time.sleep(args.warmup)
        monitor.new_lines()
        startup = process_cpu(process)
        began, engine0, busy0 = time.monotonic(), engine_cpu(), machine_cpu()
        rss: list[float] = []
        slices: list[float] = []  # CPU % of one core per SLICE_S
        stamps: list[tuple[float, float]] = []  # (seen in the log, the line's `at`: its collection began)
        slice_at, slice_cpu, rss_at = began, startup, began
        while (now := time.monotonic()) < began + args.window:
            if now >= rss_at:
                rss.append(process.memory_info().rss / MB)
                rss_at += 1.0
            if now - slice_at >= SLICE_S:
                cpu = process_cpu(process)
                slices.append((cpu - slice_cpu) / (now - slice_at) * 100.0)
                slice_at, slice_cpu = now, cpu
            stamps += [(seen, line["at"]) for seen, line in monitor.new_lines()]
            time.sleep(max(0.0, min(POLL_S, began + args.window - time.monotonic())))
        seconds, cpu = time.monotonic() - began, process_cpu(process)
        engine1, busy1 = engine_cpu(), machine_cpu()
        rss.append(process.memory_info().rss / MB)
        stamps += [(seen, line["at"]) for seen, line in monitor.new_lines()]
        if monitor.exited:
            raise BenchError(f"the monitor exited during the measurement:\n{monitor.log_tail()}")
    return {
        "interval_s": interval,
        "cpu_percent": (cpu - startup) / seconds * 100.0,
        "slices": spread(slices),
        "rss_mb": spread(rss),
        "rss_mean": statistics.fmean(rss),
        "rss_peak": max(rss),
        "lines": len(stamps),
        "expected_lines": round(seconds / interval),
        "period_s": median(b - a for (_, a), (_, b) in itertools.pairwise(stamps)),
        "written_s": spread(seen - at for seen, at in stamps),
        "engine_cpu_percent": per_core(engine0, engine1, seconds),
        "busy": busy_share(busy0, busy1),
        "startup_cpu_s": startup,  # before the window: imports, the first collections
    }


# --- 2. reaction ----------------------------------------------------------------------------------
def replica_number(instance: str) -> int:
    match = re.fullmatch(rf"{STACK}-backend-(\d+)", instance)
    return int(match.group(1)) if match else 0


def backend_decision(line: dict) -> dict:
    return next((d for d in line.get("decisions", []) if d.get("pool") == "backend"), {})


def wait_until_steady(monitor: Monitor, window_s: float, timeout: float) -> None:
    """Until the monitor has decided `hold` on full windows of the baseline for `window_s` seconds."""
    deadline = time.monotonic() + timeout
    steady_since: float | None = None
    while time.monotonic() < deadline and not monitor.exited:
        for _, line in monitor.new_lines():
            rps = line.get("pools", {}).get("backend", {}).get("rps")
            if backend_decision(line).get("action") != "hold" or rps is None:
                steady_since = None
            elif steady_since is None:
                steady_since = line["at"]
            elif line["at"] - steady_since >= window_s:
                return
        time.sleep(0.2)
    raise BenchError(f"the monitor did not settle on the baseline in {timeout:.0f} s:\n{monitor.log_tail()}")


def since(stamp: object, start: float) -> float | None:
    """Seconds from `start` (epoch) to an ISO 8601 time of a scale event; None when it is not one."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp() - start
    except ValueError:
        return None


def measure_reaction(stack: Stack, number: int, args: argparse.Namespace) -> dict:
    stack.scale("backend", POLICY["min_replicas"], "-e", "trigger=bench")
    events_before = len(stack.events())
    workdir = stack.workdir / f"reaction-{number}"
    monitor = Monitor(stack, workdir, interval_s=1.0, window_s=WINDOW_S, pools={"backend": POLICY})
    budget = args.spike_seconds + 120
    baseline = Load(stack.https_port, [SPIKE_PATH], args.baseline_rate, 2, BASELINE_SOURCES, budget)
    probe = Load(stack.https_port, ["/api/whoami"], args.probe_rate, 1, [PROBE_SOURCE], budget, timeout=5)
    spike_workers = max(1, round(args.spike_rate / 10))
    spike = Load(
        stack.https_port, [SPIKE_PATH], args.spike_rate, spike_workers, SPIKE_SOURCES, args.spike_seconds
    )
    found: dict = {"round": number, "decision_s": None, "tick_s": None, "serving_s": None, "desired": None}
    with baseline, probe, monitor:
        probe.wait_for_answer()
        wait_until_steady(monitor, WINDOW_S + 1, timeout=60)
        with spike:
            start, start_mono, busy0 = time.time(), time.monotonic(), machine_cpu()
            while time.monotonic() < start_mono + args.spike_seconds:
                for seen, line in monitor.new_lines():
                    decision = backend_decision(line)
                    if found["decision_s"] is None and decision.get("action") == "up":
                        found |= {"decision_s": seen - start, "tick_s": line["at"] - start}
                        found["desired"] = decision.get("desired")
                new = [at for name, at in probe.first_seen().items() if replica_number(name) > 3]
                if new and found["serving_s"] is None:
                    found["serving_s"] = min(new) - start_mono
                if found["serving_s"] is not None and found["decision_s"] is not None:
                    break
                time.sleep(POLL_S)
            found["busy"] = busy_share(busy0, machine_cpu())
    # The monitor has stopped; a scale run it started has finished (it waits for it).
    found |= {"spike_sent": spike.tally.sent, "spike_failed": spike.tally.failed, "spike_rps": spike.rate}
    done = None not in (found["decision_s"], found["serving_s"])
    found["decision_to_serving_s"] = found["serving_s"] - found["decision_s"] if done else None
    found["notes"] = [f"spike failures: {dict(spike.tally.failures)}"] if spike.tally.failed else []
    missing = {"up decision": found["decision_s"], "new replica answer": found["serving_s"]}
    found["notes"] += [f"no {what} in {args.spike_seconds:g} s" for what, at in missing.items() if at is None]
    runs = [e for e in stack.events()[events_before:] if e.get("trigger") == "monitor"]
    found["scale_start_s"] = since(runs[0].get("start"), start) if runs else None
    found["scale_end_s"] = since(runs[0].get("end"), start) if runs else None
    if runs and runs[0].get("result") != "ok":
        found["notes"].append(f"the monitor's scale run: {runs[0].get('result')}")
    return found


def targets(overheads: list[dict], reactions: list[dict]) -> list[dict]:
    found = []
    for o in overheads:
        kept = o["period_s"] is not None and o["period_s"] <= o["interval_s"] * 1.2
        caveat = (
            "" if kept else f"; one collection per {o['period_s']:.2f} s, not every {o['interval_s']:g} s"
        )
        found.append(
            {
                "target": f"CPU <= {TARGET_CPU_PERCENT:g} % of a core at {o['interval_s']:g} s",
                "measured": f"{o['cpu_percent']:.2f} % (whole window{caveat})",
                "met": kept and o["cpu_percent"] <= TARGET_CPU_PERCENT,
            }
        )
    for o in overheads:
        found.append(
            {
                "target": f"RSS <= {TARGET_RSS_MB:g} MB at {o['interval_s']:g} s",
                "measured": f"peak {o['rss_peak']:.1f} MB",
                "met": o["rss_peak"] <= TARGET_RSS_MB,
            }
        )
    decisions = [r["decision_s"] for r in reactions if r["decision_s"] is not None]
    within = sum(1 for d in decisions if d <= TARGET_DECISION_S)
    shown = f"worst {max(decisions):.2f} s, median {statistics.median(decisions):.2f} s" if decisions else "-"
    found.append(
        {
            "target": f"decision <= {TARGET_DECISION_S:g} s after the spike starts",
            "measured": f"{shown}; {within} of {len(reactions)} rounds within",
            "met": bool(reactions) and within == len(reactions),
        }
    )
    return found


def measure(stack: Stack, args: argparse.Namespace) -> dict:
    with stack.up():
        total = args.window * 3 + (args.warmup + 30) * 2 + 60
        with Load(stack.https_port, LIGHT_PATHS, args.light_rate, 2, LIGHT_SOURCES, total) as light:
            time.sleep(3)
            baseline = measure_baseline(args.window)
            print(f"overhead: no monitor: {baseline}", flush=True)
            overheads = []
            for interval in (2.0, 1.0):
                overheads.append(measure_overhead(stack, interval, args))
                print(f"overhead: {overheads[-1]}", flush=True)
        reactions = []
        for number in range(1, args.rounds + 1):
            reactions.append(measure_reaction(stack, number, args))
            print(f"reaction: {reactions[-1]}", flush=True)
    return {
        "stack": STACK,
        "https_port": BASE + 443,
        "frontend_port_base": BASE + 100,
        "backend_port_base": BASE + 200,
        **{k: getattr(args, k) for k in ("light_rate", "baseline_rate", "probe_rate", "spike_rate")},
        "warmup_s": args.warmup,
        "window_s": args.window,
        "poll_s": POLL_S,
        "spike_path": SPIKE_PATH,
        "baseline": baseline,
        "overheads": overheads,
        "light": {"sent": light.tally.sent, "failed": light.tally.failed},
        "reactions": reactions,
        "reaction_spread": {key: spread(r[key] for r in reactions) for key in SPREAD},
        "targets": targets(overheads, reactions),
    }


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, "monitor", NUMBERS)
    args = parser.parse_args(argv)
    rates = (args.light_rate, args.baseline_rate, args.spike_rate, args.probe_rate)
    if args.rounds < 0 or not all(0 < r <= 200 for r in rates) or not 10 <= args.window <= 600:
        parser.error("--rounds must be >= 0, rates in (0, 200] req/s, --window in [10, 600] s")
    workdir = Path(tempfile.mkdtemp(prefix=f"{STACK}-"))
    stack = Stack.own(STACK, BASE, workdir, nginx_lb_allowlist=["127.0.0.0/8"])  # load and probe unlimited
    machine = host.machine(WATCHED, psutil=psutil.__version__)
    return results.run("monitor", __file__, machine, workdir, args.write_docs, lambda: measure(stack, args))


if __name__ == "__main__":
    sys.exit(main())
