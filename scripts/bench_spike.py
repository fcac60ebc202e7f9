#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The 10x spike with clients as the Internet sends them, four ways side by side in one run: the monitor
off, the monitor of `--before`, this checkout's, and this checkout's with 4 warm backend replicas.

How it measures and what each figure means: the doc's section "The 10x spike, four ways" (its template:
docs/benchmarks/spike.md.j2). Every load and wait is bounded; what it brings up it removes again, also on
Ctrl-C or SIGTERM. --write-docs writes docs/benchmarks/spike.json and renders the doc.

    .venv/bin/python scripts/bench_spike.py --rounds 3 --write-docs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchkit import host, results
from benchkit import stats as tl
from benchkit.host import ROOT
from benchkit.locust import LocustRun, locust_version
from benchkit.monitor import Monitor
from benchkit.stack import Stack, parse_sources
from benchkit.stats import median

WATCHED = (
    "monitor",
    "collections/ansible_collections/tenfold/stack/plugins/module_utils/policy.py",
    "scripts/bench_spike.py",
)
VARIANTS = ("monitor off", "monitor before", "monitor now", "monitor now, 4 warm")
PLOT = ROOT / "docs" / "spike-variants.png"
STACK, BASE = "tenfoldspike", 47000
# The stack as main had it before warm replicas, for the "monitor before" variant; and one whose backend
# keeps 4 warm replicas (what a 10x spike on 3 replicas needs at once), for the last.
EXTRA = {
    "monitor before": {"app_pools_frontend_warm_replicas": 0, "app_pools_backend_warm_replicas": 0},
    "monitor now, 4 warm": {"app_pools_backend_warm_replicas": 4},
}
BASE_SIZES = {"frontend": 3, "backend": 3}


class Sampler(threading.Thread):
    """The LB's backend pool every half second: (time, active member ids, answers per member id)."""

    def __init__(self, status_port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{status_port}/status"
        self.rows: list[tuple[float, list[str], dict[str, int]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    pool = json.loads(answer.read())["pools"]["backend"]
            except (OSError, ValueError, KeyError):
                continue
            active = [m["id"] for m in pool["members"] if m["state"] == "active"]
            served = {i: sum(f["requests"].values()) for i, f in pool["served"].items()}
            self.rows.append((time.time(), active, served))

    def first_new_serving(self, before: set[str], since: float) -> float | None:
        """Seconds from `since` to the first sample in which a replica not in `before` had answered more
        than it had at `since`."""
        base = next((served for at, _, served in self.rows if at >= since), {})
        for at, _, served in self.rows:
            if at >= since and any(n > base.get(i, 0) for i, n in served.items() if i not in before):
                return at - since
        return None


NUMBERS = {  # the bench's number options: default, what it is
    "--rounds": (3, "rounds of the four variants, 1-5"),
    "--baseline-rps": (15.0, "req/s before and after the spike"),
    "--baseline-s": (30.0, "seconds before the spike"),
    "--spike-s": (60.0, "seconds of 10x"),
    "--after-s": (20.0, "seconds after the spike"),
    "--max-concurrency": (4, "requests a backend replica works on at once"),
    "--work-ms": (200, "ms of work per request"),
    "--target-rps": (15.0, "the monitors' target_rps_per_replica"),
}


def variant_stack(args, variant: str, workdir: Path) -> Stack:
    """The stack with the variant's settings; its work directory holds this run's scale lock and events."""
    extra = {"nginx_lb_allowlist": [], "app_pools_backend_max_concurrency": args.max_concurrency}
    return Stack.own(STACK, BASE, workdir, **extra, **EXTRA.get(variant, {}))


def run_once(args, variant: str, workdir: Path, worktree: Path) -> dict:
    stack = variant_stack(args, variant, workdir)
    # 3 replicas of each pool, and the variant's warm ones (a request at a pool's size tops them up or
    # removes them); "before" had none.
    for pool, replicas in BASE_SIZES.items():
        stack.scale(pool, replicas, "-e", "trigger=manual")
    warm_rss = warm_rss_mib(STACK) if variant == "monitor now" else None
    phases = tl.spike_phases(args.baseline_rps, 10.0, args.baseline_s, args.spike_s, args.after_s, 1.0)
    before_ids = {m["id"] for m in members(stack) if m["state"] == "active"}
    monitor = None
    if variant != "monitor off":
        policy = {"min_replicas": 3, "max_replicas": 10, "target_rps_per_replica": args.target_rps}
        code = worktree / "monitor" if variant == "monitor before" else None  # None: the installed one
        monitor = Monitor(stack, workdir / "monitor", code, window_s=10.0, pools={"backend": policy}).start()
    sampler = Sampler(stack.status_port)
    env = {
        "TENFOLD_LOAD_STAGES": json.dumps([[p.end_s, p.users] for p in phases]),
        "TENFOLD_LOAD_USER_RATE": "1",
    }
    run = LocustRun(workdir, "spike", stack.url, args.sources, f"/api/work?ms={args.work_ms}", env=env)
    sampler.start()
    try:
        if monitor:
            monitor.wait_for_lines(2, timeout=60)
        start = run.run(["PacedUser"], limit_s=phases[-1].end_s + 90, shape=True)
    finally:
        sampler.stopping.set()
        sampler.join(timeout=5)
        if monitor:
            monitor.stop()
        stack.restore(BASE_SIZES)  # the monitor has stopped: nothing else moves the pools
    seconds = tl.read_seconds(run.seconds_file)
    evaluated = tl.evaluate_spike(seconds, start, phases, tl.Criteria())
    spike_at = start + args.baseline_s
    return {
        "variant": variant,
        "start": start,
        "phases": {
            p["name"]: {k: p[k] for k in ("requests", "failed", "p50_s", "p95_s", "p99_s")} for p in evaluated
        },
        "failed": sum(r["failed"] for r in seconds),
        "sent": sum(r["ok"] + r["failed"] for r in seconds),
        "first_new_serving_s": sampler.first_new_serving(before_ids, spike_at),
        "decided_s": first_up_decision(monitor.lines(), spike_at) if monitor else None,
        "timeline": tl.timeline(seconds, start, phases),
        "members": [[round(at - start, 1), len(active)] for at, active, _ in sampler.rows],
        "warm_rss_mib": warm_rss,
    }


def warm_rss_mib(stack: str) -> float | None:
    """RSS of the backend's warm replica: the sum over its processes (init, gunicorn and its worker)."""
    name = f"{stack}-backend-4-warm"
    for _ in range(30):  # a warm replica started by the restore may still be starting
        out = subprocess.run(
            ["docker", "top", name, "-o", "pid,rss"], capture_output=True, text=True, timeout=30, check=False
        )
        rows = [line.split() for line in out.stdout.splitlines()[1:]]
        kib = [int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()]
        if out.returncode == 0 and len(kib) >= 3:
            return sum(kib) / 1024
        time.sleep(1)
    return None


def first_up_decision(metrics: list[dict], since: float) -> float | None:
    """Seconds from `since` to the monitor's first decision to grow the backend."""
    for line in metrics:
        ups = [d for d in line.get("decisions", []) if d["pool"] == "backend" and d["action"] == "up"]
        if line["at"] >= since and ups:
            return line["at"] - since
    return None


def members(stack: Stack) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.status_port}/members/backend", timeout=5) as answer:
        return json.loads(answer.read())["members"]


def median_of(runs: list[dict], get) -> float | None:
    return median(get(r) for r in runs)


def plot(runs: list[dict], path: Path) -> None:
    """Round 1 of each variant: served req/s, p95 per second, active backend members."""
    first = {r["variant"]: r for r in reversed(runs)}
    panels: dict[str, list[tuple]] = {"answered req/s": [], "p95 (s)": [], "backend members": []}
    for variant, style in zip(VARIANTS, ("-", "--", ":", "-."), strict=True):
        rows, members = first[variant]["timeline"], first[variant]["members"]
        t, options = [row["t"] for row in rows], {"label": variant, "linestyle": style}
        panels["answered req/s"].append((t, [row["served_rps"] for row in rows], dict(options)))
        panels["p95 (s)"].append((t, [row["p95_s"] for row in rows], dict(options)))
        panels["backend members"].append(
            ([m[0] for m in members], [m[1] for m in members], {**options, "step": True})
        )
    offered = {"color": "grey", "linewidth": 0.8, "label": "offered"}
    panels["answered req/s"].append((t, [row["offered_rps"] for row in rows], offered))
    results.plot(path, "tenfold: the same 10x spike, four ways (round 1 of each)", panels)


def variants(runs: list[dict]) -> list[dict]:
    """Per variant over the rounds: the times as [min, median, max], the rest as medians or sums."""
    found = []
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        found.append(
            {
                "variant": variant,
                "decided_s": tl.spread(r["decided_s"] for r in mine),
                "first_serving_s": tl.spread(r["first_new_serving_s"] for r in mine),
                "failed": sum(r["failed"] for r in mine),
                "sent": sum(r["sent"] for r in mine),
                "spike_s": [
                    median_of(mine, lambda r, k=k: r["phases"]["spike"][k])
                    for k in ("p50_s", "p95_s", "p99_s")
                ],
                "baseline_p95_s": median_of(mine, lambda r: r["phases"]["baseline"]["p95_s"]),
                "after_p95_s": median_of(mine, lambda r: r["phases"]["after"]["p95_s"]),
                "most_members": max((m[1] for r in mine for m in r["members"]), default=0),
            }
        )
    return found


def targets(found: list[dict], rss: float | None) -> list[dict]:
    """The issue's targets for the monitor of this checkout, from the variants' medians over the rounds."""
    by = {f["variant"]: f for f in found}
    now, warm = by["monitor now"], by[VARIANTS[3]]
    p95, base = {v: f["spike_s"][1] for v, f in by.items()}, now["baseline_p95_s"]
    first, warm_first = (
        None if f["first_serving_s"] is None else f["first_serving_s"][1] for f in (now, warm)
    )

    def within(variant: str) -> bool:  # at most twice the baseline's p95, and below both earlier variants
        return p95[variant] <= 2 * base and all(p95[variant] < p95[v] for v in VARIANTS[:2])

    shown = {v: f"{p95[v] * 1000:.0f}" for v in VARIANTS}
    rows = [
        (
            "spike start -> first new replica serving <= 3 s",
            results.number(first, 1) + " s",
            (first or 99) <= 3,
        ),
        ("failed requests: 0 (every phase)", str(now["failed"]), now["failed"] == 0),
        (
            "spike p95 <= 2x the baseline's and below both other variants",
            f"{shown['monitor now']} ms (baseline {base * 1000:.0f} ms; off {shown['monitor off']},"
            f" before {shown['monitor before']})",
            within("monitor now"),
        ),
        (
            "the same with 4 warm backend replicas",
            f"{shown[VARIANTS[3]]} ms, first new replica serving {results.number(warm_first, 1)} s",
            within(VARIANTS[3]),
        ),
        (
            "memory of a warm replica stated (RSS)",
            f"{results.number(rss, 0)} MiB (backend replica, idle)",
            rss is not None,
        ),
    ]
    return [{"target": name, "measured": value, "met": ok} for name, value, ok in rows]


def measure_all(args: argparse.Namespace, workdir: Path) -> dict:
    runs: list[dict] = []
    with (
        host.worktree(args.before, workdir / "before") as before,
        variant_stack(args, "", workdir / "stack").up(),
    ):
        for round_ in range(1, args.rounds + 1):
            first = (round_ - 1) % len(VARIANTS)
            for variant in VARIANTS[first:] + VARIANTS[:first]:  # a different variant first in each round
                print(f"round {round_}: {variant} ...", flush=True)
                here = workdir / f"r{round_}-{variant.replace(' ', '-').replace(',', '')}"
                runs.append({**run_once(args, variant, here, before), "round": round_})
                (workdir / "runs.json").write_text(json.dumps(runs, indent=1))  # kept if a later run fails
                print(f"  first new serving {runs[-1]['first_new_serving_s']}, failed {runs[-1]['failed']}")
    plot(runs, PLOT if args.write_docs else workdir / PLOT.name)
    return {
        "stack": STACK,
        **{k: getattr(args, k) for k in ("rounds", "baseline_rps", "baseline_s", "spike_s", "after_s")},
        **{k: getattr(args, k) for k in ("max_concurrency", "work_ms", "target_rps", "before")},
        "sources": {"count": len(args.sources), "range": f"{args.sources[0]}-{args.sources[-1]}"},
        "variants": variants(runs),
        "targets": targets(variants(runs), median(r.get("warm_rss_mib") for r in runs)),
    }


def main() -> int:
    parser = results.parser(__doc__, "spike", NUMBERS)
    parser.add_argument("--sources", default="127.0.5.1-127.0.5.200", help="at least 100, none allowlisted")
    parser.add_argument("--before", default="22f9ee0^", help="main before this work (default: %(default)s)")
    args = parser.parse_args()
    args.sources = parse_sources(args.sources)
    if not 1 <= args.rounds <= 5 or len(args.sources) < 100:
        parser.error("--rounds must be 1-5 and --sources at least 100 addresses")
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-spike-"))
    machine = host.machine(WATCHED, locust=locust_version())  # what ran, before anything changes
    return results.run(
        "spike", __file__, machine, workdir, args.write_docs, lambda: measure_all(args, workdir)
    )


if __name__ == "__main__":
    sys.exit(main())
