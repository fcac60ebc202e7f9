#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The 10x spike with clients as the Internet sends them, four ways side by side in one run.

A stack of its own (`tenfoldspike`, no allowlist) whose backend replicas each work on few requests at once
(`--max-concurrency`), so the baseline replicas' concurrency, not the machine, is what a 10x spike on
`/api/work` runs into. locust's paced users (one keep-alive connection each, no retry, every failure
counted) come from `--sources` (at least 100 addresses, each below the LB's per-address limits). Each
round runs the same load against: the monitor off (3 replicas), the monitor of `--before` (a worktree of
main before this work), the monitor of this checkout, and the same with 4 warm backend replicas, in turn. A
sampler reads the LB's GET /status every half second: when a replica that was not a member before the spike
first answered, and how many backend members were active.

    .venv/bin/python scripts/bench-spike.py --rounds 3 --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import load_test as lt
import tenfold_load as tl
import yaml
from benchlib import (
    BIN,
    DOC,
    MONITOR_METRICS,
    ROOT,
    json_lines,
    leftovers,
    machine,
    run_playbook,
    section_head,
    write_section,
)

WATCHED = (
    "monitor",
    "collections/ansible_collections/tenfold/stack/plugins/module_utils/policy.py",
    "scripts/bench-spike.py",
)
VARIANTS = ("monitor off", "monitor before", "monitor now", "monitor now, 4 warm")
PLOT = ROOT / "docs" / "spike-variants.png"
STACK = {
    "tenfold_stack": "tenfoldspike",
    "nginx_lb_listen_address": "127.0.0.1",
    "nginx_lb_http_port": 47080,
    "nginx_lb_https_port": 47443,
    "nginx_lb_status_port": 47081,
    "app_pools_frontend_port_base": 47100,
    "app_pools_backend_port_base": 47200,
    "nginx_lb_allowlist": [],
}
# The stack as main had it before warm replicas, for the "monitor before" variant; and one whose backend
# keeps 4 warm replicas (what a 10x spike on 3 replicas needs at once), for the last.
COLD = {"app_pools_frontend_warm_replicas": 0, "app_pools_backend_warm_replicas": 0}
WARM4 = {"app_pools_backend_warm_replicas": 4}


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


def run_once(args, target: lt.Target, variant: str, workdir: Path, worktree: Path) -> dict:
    workdir.mkdir(parents=True)
    # 3 replicas of each pool, and the variant's warm ones (a request at a pool's size tops them up or
    # removes them); "before" had none.
    lt.scale_to(target, {"frontend": 3, "backend": 3}, workdir, scale_env())
    warm_rss = warm_rss_mib(target.stack) if variant == "monitor now" else None
    phases = tl.spike_phases(args.baseline_rps, 10.0, args.baseline_s, args.spike_s, args.after_s, 1.0)
    before_ids = {m["id"] for m in members(target) if m["state"] == "active"}
    monitor = None
    if variant != "monitor off":
        policy = {"min_replicas": 3, "max_replicas": 10, "target_rps_per_replica": args.target_rps}
        settings = {"window_s": 10.0, "pools": {"backend": policy}}
        code = worktree / "monitor" if variant == "monitor before" else None  # None: the installed one
        monitor = lt.Monitor(target, workdir, settings, code)
        monitor.start()
    sampler = Sampler(target.status_port)
    run = lt.LocustRun(
        workdir,
        "spike",
        target,
        args.sources,
        f"/api/work?ms={args.work_ms}",
        env={
            "TENFOLD_LOAD_STAGES": json.dumps([[p.end_s, p.users] for p in phases]),
            "TENFOLD_LOAD_USER_RATE": "1",
        },
    )
    sampler.start()
    try:
        if monitor:
            monitor.wait_for_lines(2, timeout=60)
        start = run.run(["PacedUser"], limit_s=phases[-1].end_s + 90, files=(lt.LOCUSTFILE, lt.SHAPEFILE))
    finally:
        sampler.stopping.set()
        sampler.join(timeout=5)
        if monitor:
            monitor.stop()
        # The monitor has stopped: nothing else moves the pool. Its scale events stay in the workdir.
        lt.restore(target, {"frontend": 3, "backend": 3}, workdir, scale_env())
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
        "events": json_lines(monitor.events) if monitor else [],
        "warm_rss_mib": warm_rss,
    }


def scale_env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
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


def members(target: lt.Target) -> list[dict]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{target.status_port}/members/backend", timeout=5
    ) as answer:
        return json.loads(answer.read())["members"]


def spread(values: list[float | None]) -> str:
    """median (min-max) of the known values, in seconds; "none" when there are none."""
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.1f} ({min(known):.1f}-{max(known):.1f})" if known else "none"


def median_of(runs: list[dict], get) -> float | None:
    values = [v for v in (get(r) for r in runs) if v is not None]
    return statistics.median(values) if values else None


def plot(runs: list[dict], path: Path) -> None:
    """Round 1 of each variant: served req/s, p95 per second, active backend members."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_p95, ax_rep) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for variant, style in zip(VARIANTS, ("-", "--", ":", "-."), strict=True):
        run = next(r for r in runs if r["variant"] == variant)
        t = [row["t"] for row in run["timeline"]]
        ax_rate.plot(t, [row["served_rps"] for row in run["timeline"]], linestyle=style, label=variant)
        p95 = [row["p95_s"] if row["p95_s"] is not None else float("nan") for row in run["timeline"]]
        ax_p95.plot(t, p95, linestyle=style, label=variant)
        ax_rep.step(
            [m[0] for m in run["members"]],
            [m[1] for m in run["members"]],
            where="post",
            linestyle=style,
            label=variant,
        )
    ax_rate.plot(
        t, [row["offered_rps"] for row in run["timeline"]], color="grey", linewidth=0.8, label="offered"
    )
    ax_rate.set_ylabel("answered req/s")
    ax_p95.set_ylabel("p95 (s)")
    ax_rep.set_ylabel("backend members")
    ax_rep.set_xlabel("seconds since the start")
    for ax in (ax_rate, ax_p95, ax_rep):
        ax.legend(loc="upper right")
    fig.suptitle("tenfold: the same 10x spike, four ways (round 1 of each)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def targets(runs: list[dict]) -> list[str]:
    """The issue's targets against this checkout's monitor (medians over the rounds)."""
    now = [r for r in runs if r["variant"] == "monitor now"]
    first = median_of(now, lambda r: r["first_new_serving_s"])
    failed = sum(r["failed"] for r in now)
    p95 = {
        v: median_of([r for r in runs if r["variant"] == v], lambda r: r["phases"]["spike"]["p95_s"])
        for v in VARIANTS
    }
    base = median_of(now, lambda r: r["phases"]["baseline"]["p95_s"])
    ready = [r for r in runs if r["variant"] == VARIANTS[3]]
    ready_first = median_of(ready, lambda r: r["first_new_serving_s"])
    rss = median_of(now, lambda r: r.get("warm_rss_mib"))
    rows = [
        (
            "spike start -> first new replica serving <= 3 s",
            "-" if first is None else f"{first:.1f} s",
            first is not None and first <= 3,
        ),
        ("failed requests: 0 (every phase)", str(failed), failed == 0),
        (
            "spike p95 <= 2x the baseline's and below both other variants",
            f"{p95['monitor now'] * 1000:.0f} ms (baseline {base * 1000:.0f} ms;"
            f" off {p95['monitor off'] * 1000:.0f}, before {p95['monitor before'] * 1000:.0f})",
            p95["monitor now"] <= 2 * base and all(p95["monitor now"] < p95[v] for v in VARIANTS[:2]),
        ),
        (
            "the same with 4 warm backend replicas",
            f"{p95[VARIANTS[3]] * 1000:.0f} ms, first new replica serving"
            f" {'-' if ready_first is None else f'{ready_first:.1f} s'}",
            p95[VARIANTS[3]] <= 2 * base and all(p95[VARIANTS[3]] < p95[v] for v in VARIANTS[:2]),
        ),
        (
            "memory of a warm replica stated (RSS)",
            "-" if rss is None else f"{rss:.0f} MiB (backend replica, idle)",
            rss is not None,
        ),
    ]
    return [
        'Targets (issue "Capacity in seconds"), for the monitor of this checkout:',
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {'met' if ok else 'not met'} |" for name, value, ok in rows),
    ]


def section(args, runs: list[dict], when: str, facts: dict) -> str:
    per_replica = args.max_concurrency * 1000 / args.work_ms
    base, spike_rps = args.baseline_rps, 10 * args.baseline_rps
    method = (
        f"**Method.** A stack of the script's own (`{STACK['tenfold_stack']}`, no allowlist) whose backend"
        f" replicas each work on {args.max_concurrency} requests at once"
        f" (`app_pools_backend_max_concurrency`): with `GET /api/work?ms={args.work_ms}` a replica answers"
        f" about {per_replica:.0f} req/s, the 3 baseline replicas {3 * per_replica:.0f}. locust's paced users"
        " send 1 request/s each on a keep-alive connection of their own, with no retry (every failure"
        f" counted), from {len(args.sources)} addresses off the allowlist"
        f" ({args.sources[0]}-{args.sources[-1]}), each far below the per-address limits: {base:g} req/s for"
        f" {args.baseline_s:g} s, then {spike_rps:g} req/s (10x) for {args.spike_s:g} s, then {base:g} req/s"
        f" for {args.after_s:g} s. Each of the {args.rounds} rounds runs the four variants in turn on the"
        " same stack, both pools put back to 3 replicas before each: the monitor off; the monitor of"
        f" `{args.before}` (main before the panic window, run from a worktree), on a stack without warm"
        " replicas as it had; the monitor of this checkout, with one warm replica per pool (its fast path"
        " promotes it); the same with 4 warm backend replicas. The monitors run with"
        f" `target_rps_per_replica` {args.target_rps:g} and bounds 3-10 and scale through this checkout's"
        " `scale.yml`. *First new replica serving* is from the spike's"
        " start to the first LB sample (every 0.5 s) in which a replica that was not a member at the start"
        " had answered; the first decision to grow is the monitor's own (its metrics log); latencies are"
        " locust's, per phase over all its requests; figures are medians over the rounds (min-max for the"
        " times)."
    )
    command = (
        f".venv/bin/python scripts/bench-spike.py --rounds {args.rounds} --baseline-rps {base:g}"
        f" --baseline-s {args.baseline_s:g} --spike-s {args.spike_s:g} --after-s {args.after_s:g}"
        f" --max-concurrency {args.max_concurrency} --write-docs"
    )
    lines = [
        *section_head("The 10x spike, four ways", "scripts/bench-spike.py", when, command, facts),
        *textwrap.wrap(method, 110),
        "",
        "| variant | first decision to grow (s) | first new replica serving (s) | failed / sent"
        " | spike p50 / p95 / p99 ms | baseline p95 ms | after p95 ms | most backend members |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        first_text = spread([r["first_new_serving_s"] for r in mine])
        decided_text = spread([r["decided_s"] for r in mine])

        def phase_ms(phase: str, key: str, mine: list[dict] = mine) -> str:
            value = median_of(mine, lambda run: run["phases"][phase][key])
            return "-" if value is None else f"{value * 1000:.0f}"

        spike = " / ".join(phase_ms("spike", k) for k in ("p50_s", "p95_s", "p99_s"))
        failed = f"{sum(r['failed'] for r in mine)} / {sum(r['sent'] for r in mine)}"
        most = max((m[1] for r in mine for m in r["members"]), default=0)
        lines.append(
            f"| {variant} | {decided_text} | {first_text} | {failed} | {spike} |"
            f" {phase_ms('baseline', 'p95_s')} | {phase_ms('after', 'p95_s')} | {most} |"
        )
    lines += ["", *targets(runs), "", f"![the four variants, round 1 of each]({PLOT.name})", ""]
    return "\n".join(lines) + "\n"


def write_docs(args, runs: list[dict], when: str, facts: dict) -> None:
    plot(runs, PLOT)
    write_section("bench-spike-variants", section(args, runs, when, facts), DOC)
    print(f"wrote {DOC} and {PLOT}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rps", type=lt.positive, default=15.0)
    parser.add_argument("--baseline-s", type=lt.positive, default=30.0)
    parser.add_argument("--spike-s", type=lt.positive, default=60.0)
    parser.add_argument("--after-s", type=lt.positive, default=20.0)
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--work-ms", type=int, default=200)
    parser.add_argument("--target-rps", type=lt.positive, default=15.0)
    parser.add_argument("--sources", default="127.0.5.1-127.0.5.200")
    parser.add_argument("--before", default="22f9ee0^", help="main before this work (default: %(default)s)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--render", type=Path, help="write the doc from the results a run kept in this workdir"
    )
    args = parser.parse_args()
    if args.render:
        kept = args.render
        meta = json.loads((kept / "meta.json").read_text())
        vars(args).update(meta["args"])
        runs = json.loads((kept / "runs.json").read_text())
        for run in runs:  # results kept before the decision time was recorded: from the monitor's log
            metrics = kept / f"r{run['round']}-{run['variant'].replace(' ', '-')}" / MONITOR_METRICS
            if "decided_s" not in run:
                run["decided_s"] = first_up_decision(json_lines(metrics), run["start"] + args.baseline_s)
        write_docs(args, runs, meta["when"], meta["machine"])
        return 0
    args.sources = lt.parse_sources(args.sources)
    if not 1 <= args.rounds <= 5 or len(args.sources) < 100:
        print("--rounds must be 1-5 and --sources at least 100 addresses", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-spike-"))
    stack = {**STACK, "app_pools_backend_max_concurrency": args.max_concurrency}
    vars_file, cold_file = workdir / "stack.yml", workdir / "stack-cold.yml"
    vars_file.write_text(yaml.safe_dump(stack))
    cold_file.write_text(yaml.safe_dump({**stack, **COLD}))
    warm4_file = workdir / "stack-warm4.yml"
    warm4_file.write_text(yaml.safe_dump({**stack, **WARM4}))
    target, cold, warm4 = lt.load_target(vars_file), lt.load_target(cold_file), lt.load_target(warm4_file)
    worktree = workdir / "before"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine(WATCHED, {"locust": lt.locust_version()})  # what ran, before anything changes
    (workdir / "meta.json").write_text(
        json.dumps({"args": vars(args) | {"render": None}, "when": when, "machine": facts})
    )
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=ROOT, check=True)
    runs: list[dict] = []
    try:
        run_playbook("site.yml", vars_file, workdir / "site.log")
        for round_ in range(args.rounds):
            first = round_ % len(VARIANTS)
            order = VARIANTS[first:] + VARIANTS[:first]  # a different variant first in each round
            for variant in order:
                print(f"round {round_ + 1}: {variant} ...", flush=True)
                name = f"r{round_ + 1}-{variant.replace(' ', '-')}"
                mine = {"monitor before": cold, VARIANTS[3]: warm4}.get(variant, target)
                runs.append({**run_once(args, mine, variant, workdir / name, worktree), "round": round_ + 1})
                (workdir / "runs.json").write_text(
                    json.dumps(runs, indent=1) + "\n"
                )  # kept if a later run fails
                last = runs[-1]
                print(
                    f"  first new serving {last['first_new_serving_s']}, failed {last['failed']}", flush=True
                )
    finally:
        run_playbook("playbooks/down.yml", vars_file, workdir / "down.log")
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    left = leftovers(target.stack)
    if left:
        print(f"left behind after down.yml: {left}", file=sys.stderr)
        return 1
    print(f"results in {workdir}")
    if args.write_docs:
        write_docs(args, runs, when, facts)
    shutil.rmtree(workdir / "before", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
