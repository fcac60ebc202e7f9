#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Benchmark the stack under load: the seed's scenarios, the LB against a backend reached directly, the spike.

Runs against a stack that is up (its variables in --vars, like tests/integration/stack.yml, with the load
sources 127.0.3.0/24 in nginx_lb_allowlist), with 3 frontend and 3 backend replicas:

1. Load balancer vs direct: locust's closed-model users send `GET /api/whoami` for --direct-seconds, first
   straight to backend replica 1 (plain HTTP on its published port), then through the LB (HTTPS, keep-alive,
   the backend pool of 3), at 10 and 50 users.
2. The seed's scenarios (scripts/load-test.sh scenarios): --users, --duration s each.
3. The spike (scripts/load-test.sh spike) with the monitor running, its defaults (2 s interval, 10 s window,
   target 33 req/s per replica); the pools go back to their sizes afterwards.

    .venv/bin/python scripts/bench-load.py --vars FILE [--duration 60] [--spike-s 120] [--write-docs]

--write-docs rewrites the sections bench-load and bench-spike of docs/benchmarks.md and the plot
docs/benchmarks-spike.png. Run it alone on the machine (flock /tmp/tenfold-heavy.lock ...).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load_test as lt
import tenfold_load as tl
from benchlib import DOC, ROOT, busy_share, machine, machine_cpu, machine_table, write_section

WATCHED = ("scripts", "monitor", "collections")
PLOT = ROOT / "docs" / "benchmarks-spike.png"
WRAP = 110


def paragraph(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=WRAP, break_on_hyphens=False)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def direct_vs_lb(args: argparse.Namespace, target: lt.Target, workdir: Path) -> list[dict]:
    backend_port = int(_var(args.vars, "app_pools_backend_port_base", 18200)) + 1
    found = []
    for users in (10, 50):
        for how, host in (("direct", f"http://127.0.0.1:{backend_port}"), ("LB", target.url)):
            run = lt.LocustRun(workdir, f"{how}-{users}", target, args.sources, "/api/whoami", host=host)
            busy0 = machine_cpu()
            run.run(
                ["SiteUser", "-u", str(users), "-r", str(users), "-t", f"{args.direct_seconds:g}s"],
                limit_s=args.direct_seconds + 90,
            )
            stats = tl.summarize(tl.read_seconds(run.seconds_file), args.direct_seconds)
            found.append(
                {
                    "how": how,
                    "host": host,
                    "users": users,
                    **stats,
                    "generator_cpu_s": run.cpu_s,
                    "busy": busy_share(busy0, machine_cpu()),
                }
            )
            print(f"{how} {users} users: {stats['rps']} req/s, p50 {ms(stats['p50_s'])} ms", flush=True)
    return found


def _var(path: Path, name: str, default: object) -> object:
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get(name, default)


def load_section(args, results: dict, direct: list[dict], facts: dict[str, str], when: str) -> str:
    command = (
        "flock /tmp/tenfold-heavy.lock .venv/bin/python scripts/bench-load.py --vars STACK.yml \\\n"
        f"  --users {','.join(str(u) for u in args.users)} --duration {args.duration:g} "
        f"--direct-seconds {args.direct_seconds:g} \\\n"
        f"  --baseline-rps {args.baseline_rps:g} --baseline-s {args.baseline_s:g} --spike-s {args.spike_s:g} "
        f"--after-s {args.after_s:g} --write-docs"
    )
    lines = [
        "## Load tests",
        "",
        f"Written by `scripts/bench-load.py` on {when}. Rerun it to replace this section and the next:",
        "",
        "```bash",
        command,
        "```",
        "",
        paragraph(
            """`STACK.yml` names a stack that is up with 3 frontend and 3 backend replicas and `127.0.3.0/24`
            in its `nginx_lb_allowlist` (this run: the variables of `tests/integration/stack.yml`, with a
            stack name and ports of its own)."""
        ),
        "",
        *machine_table(facts),
        "",
        paragraph(
            f"""**Method.** The load generator is locust {lt.locust_version()} in headless mode
            (`scripts/load/locustfile.py`, `FastHttpUser`), on the same 2 cores as nginx, the app
            containers and Docker: what it spends is not available to the stack. Its connections come from
            {results["sources"]}, which are in the stack's `nginx_lb_allowlist`: the rate and connection
            limits do not apply to them, and still apply to every other address. The scenarios use the
            **closed model**: each user sends its next request as soon as its last one is answered, so the
            latencies are those of requests that waited for a free user, and the rate is what the stack
            (and the generator) managed. Requests alternate between `GET /` (frontend) and `GET
            /api/work?ms=20` (backend, 20 ms of simulated I/O). Latency percentiles are nearest-rank over
            every request of the run, from locust's own timing of each request (its `request` event); a
            request fails when locust counts it failed (status 400 or more, a timeout, a broken
            connection). The stack ran 3 frontend and 3 backend replicas and no monitor; the criteria are
            the seed's: at least {results["criteria"]["min_rps"]:g} req/s, p95 at most
            {results["criteria"]["max_p95_s"]:g} s, at most {results["criteria"]["max_error_percent"]:g} %
            errors."""
        ),
        "",
        "| users | req/s | p50 ms | p95 ms | p99 ms | errors % | generator CPU per request (ms) | result |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in results["scenarios"]:
        failed = ", ".join(c["criterion"].split(" ")[0] for c in s["checks"] if not c["pass"])
        per = s["generator_cpu_s"] / s["requests"] * 1000 if s["requests"] else None
        lines.append(
            f"| {s['users']} | {s['rps']:.0f} | {ms(s['p50_s'])} | {ms(s['p95_s'])} | {ms(s['p99_s'])} | "
            f"{s['error_percent']:.2f} | {'-' if per is None else f'{per:.2f}'} | "
            f"{'pass' if s['pass'] else 'fail: ' + failed} |"
        )
    lines += [
        "",
        paragraph(
            f"""Each scenario ran {args.duration:g} s
            ({"the seed's duration" if args.duration == 60 else "a reduced run: the seed's is 60 s"}) and
            starts all its users within its first second, on new TLS connections; the results file is
            `logs/load-test-results.json` when run as `./scripts/load-test.sh --vars STACK.yml`."""
        ),
        "",
        "### The load balancer against a backend reached directly",
        "",
        paragraph(
            f"""The same closed-model users send `GET /api/whoami` for {args.direct_seconds:g} s: *direct*
            to backend replica 1 over plain HTTP on its published port, then through the LB over HTTPS
            (keep-alive, so one TLS handshake per user) to the backend pool of 3 replicas. Both reach the
            replicas through Docker's published ports (the LB's upstreams are those ports). The difference is
            what the LB adds: TLS, the proxy hop, its headers and limits' bookkeeping; on this machine the LB
            also competes for the same 2 cores."""
        ),
        "",
        "| users | path | req/s | p50 ms | p95 ms | p99 ms | errors % | machine CPU busy |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in direct:
        busy = "-" if d["busy"] is None else f"{d['busy'] * 100:.0f} %"
        lines.append(
            f"| {d['users']} | {d['how']} | {d['rps']:.0f} | {ms(d['p50_s'])} | {ms(d['p95_s'])} | "
            f"{ms(d['p99_s'])} | {d['error_percent']:.2f} | {busy} |"
        )
    by = {(d["how"], d["users"]): d for d in direct}
    added = []
    for users in (10, 50):
        a, b = by.get(("direct", users)), by.get(("LB", users))
        if a and b and a["p50_s"] is not None and b["p50_s"] is not None:
            added.append(
                f"{users} users: p50 {ms(b['p50_s'] - a['p50_s'])} ms, p95 {ms(b['p95_s'] - a['p95_s'])} ms"
            )
    if added:
        lines += ["", paragraph("Added by the LB (LB minus direct): " + "; ".join(added) + ".")]
    if any(d["busy"] is not None and d["busy"] > 0.95 for d in direct):
        lines += [
            "",
            paragraph(
                """Where the machine was fully busy, the rate is the limit of the machine (generator, nginx
                and the apps on 2 cores), not of the LB alone."""
            ),
        ]
    lines += [
        "",
        paragraph(
            """Scale actuation times (how long `scale.yml` takes to add or remove replicas, and when a new
            replica serves) are in the [Scaling](#scaling) section."""
        ),
    ]
    return "\n".join(lines)


def spike_section(args, doc: dict, when: str) -> str:
    phases = doc["phases"]
    peak = {
        pool: max((r["replicas"].get(pool) or 0) for r in doc["timeline"]) for pool in ("frontend", "backend")
    }
    first_up = {}
    for pool in ("frontend", "backend"):
        for row in doc["timeline"]:
            if (row["replicas"].get(pool) or 0) > doc["pools_before"].get(pool, 0):
                first_up[pool] = row["t"] - phases[1]["start_s"]
                break
    runs = [e for e in doc["scale_events"] if e.get("trigger") == "monitor"]
    model = doc["model"].removeprefix("approximately open: ")
    lines = [
        "## The 10x spike",
        "",
        f"Written by `scripts/bench-load.py` on {when} (the command above; the machine as above).",
        "",
        paragraph(
            f"""**Method.** `./scripts/load-test.sh spike`: {phases[0]["offered_rps"]:g} req/s for
            {phases[0]["end_s"]:g} s, then {phases[1]["offered_rps"]:g} req/s ({doc["factor"]:g}x) for
            {phases[1]["end_s"] - phases[1]["start_s"]:g} s, then {phases[2]["offered_rps"]:g} req/s for
            {phases[2]["end_s"] - phases[2]["start_s"]:g} s, the same requests as the scenarios, from clients
            as the Internet sends them: {doc["sources"]}, none on the allowlist, each far below the
            per-address limits, one keep-alive connection per user, no retry (every failure counted). The
            model is **approximately open**: {model}. Locust's shape changes the number of users once a
            second, so a phase's users arrive up to about 2 s after its scheduled start; the phases are
            evaluated on the schedule. The monitor (`python -m tenfold_monitor run`) ran throughout with its
            defaults (interval 2 s, window 10 s, target 33 req/s per replica, min 3, max 10, both pools),
            acting through `scale.yml`; replicas per second are the running containers of its metrics log.
            The baseline is sized so that 3 replicas per pool are right for it: each pool gets half of
            {phases[0]["offered_rps"]:g} req/s, below what 3 replicas carry at the target
            (3 x 33 = 99 req/s); the spike's half of {phases[1]["offered_rps"]:g} req/s needs
            {-(-phases[1]["offered_rps"] / 2 // 33):.0f} per pool."""
        ),
        "",
        "| phase | offered req/s | served req/s | p50 ms | p95 ms | p99 ms | errors % | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in phases:
        failed = ", ".join(c["criterion"].split(" ")[0] for c in p["checks"] if not c["pass"])
        served = p["ok"] / (p["end_s"] - p["start_s"])
        lines.append(
            f"| {p['name']} | {p['offered_rps']:g} | {served:.0f} | {ms(p['p50_s'])} | {ms(p['p95_s'])} | "
            f"{ms(p['p99_s'])} | {p['error_percent']:.2f} | {'pass' if p['pass'] else 'fail: ' + failed} |"
        )
    worst = max((r["p95_s"] for r in doc["timeline"] if r["p95_s"] is not None), default=None)
    lines += [
        "",
        paragraph(
            f"""Overall: **{"pass" if doc["pass"] else "fail"}** against the criteria (p95 and errors in
            every phase, the minimum rate in the spike). Worst single second's p95: {ms(worst)} ms. Peak
            replicas: frontend {peak["frontend"]}, backend {peak["backend"]}; the first new replica was
            running {first_up.get("frontend", "-")} s (frontend) and {first_up.get("backend", "-")} s
            (backend) after the spike's scheduled start. The monitor ran {len(runs)} scale runs
            ({", ".join(_describe(e) for e in runs) or "none"}). The generator used
            {doc["generator_cpu_s"]:.1f} s of CPU. The timeline (per second: offered, started, served and
            failed requests, p95, errors, replicas per pool) is `logs/load-test-spike.json` when run by
            hand."""
        ),
        "",
        *slices_table(doc),
        "",
        "![The spike: offered and served req/s, p95 and replicas per pool, second by second]"
        "(benchmarks-spike.png)",
    ]
    return "\n".join(lines)


def slices_table(doc: dict, width: int = 20) -> list[str]:
    """The timeline in slices of `width` seconds: served req/s, p95 of the seconds, replicas at the end."""
    rows = doc["timeline"]
    lines = [
        paragraph(
            f"""The timeline in slices of {width} s (from `timeline` in the result file): mean offered and
            served req/s, the median and the worst second's p95, and the replicas running at the slice's
            end. The frontend and backend containers, the scale runs and the generator share the same 2
            cores, so a replica added on this machine adds no CPU."""
        ),
        "",
        "| seconds | phase | offered req/s | served req/s | p95 ms, median / worst second | frontend "
        "| backend |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for first in range(0, len(rows), width):
        part = rows[first : first + width]
        p95 = sorted(r["p95_s"] for r in part if r["p95_s"] is not None)
        phases = "/".join(dict.fromkeys(str(r["phase"]) for r in part))
        last = part[-1]["replicas"]
        offered = sum(r["offered_rps"] for r in part) / len(part)
        served = sum(r["served_rps"] for r in part) / len(part)
        lines.append(
            f"| {first}-{first + len(part)} | {phases} | {offered:.0f} | {served:.0f} | "
            f"{ms(p95[len(p95) // 2] if p95 else None)} / {ms(p95[-1] if p95 else None)} | "
            f"{last.get('frontend', '-')} | {last.get('backend', '-')} |"
        )
    after = doc["phases"][2]
    tail = [r for r in rows if r["phase"] == "after" and r["served_rps"] > 2 * after["offered_rps"]]
    if tail:
        span = f"second {tail[0]['t']}" if len(tail) == 1 else f"seconds {tail[0]['t']}-{tail[-1]['t']}"
        lines += [
            "",
            paragraph(
                f"""In the first {len(tail)} s of the after phase ({span})
                the stack still served {", ".join(str(r["served_rps"]) for r in tail)} req/s: the spike's
                users were still stopping and their last requests being answered. Their latencies count in
                the after phase's p95."""
            ),
        ]
    return lines


def _describe(event: dict) -> str:
    moved = [
        f"{p['pool']} {p['current']}->{p['target']}"
        for p in event.get("pools", [])
        if p["current"] != p["target"]
    ]
    return f"{', '.join(moved) or 'no change'} in {event.get('duration_s', 0):.0f} s ({event.get('result')})"


def main() -> int:
    top = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--vars", type=Path, required=True)
    top.add_argument("--users", type=lt.number_list, default=list(lt.DEFAULT_USERS))
    top.add_argument("--duration", type=lt.positive, default=60.0)
    top.add_argument("--direct-seconds", type=lt.positive, default=20.0)
    top.add_argument("--baseline-s", type=lt.positive, default=60.0)
    top.add_argument("--spike-s", type=lt.positive, default=120.0)
    top.add_argument("--after-s", type=lt.positive, default=60.0)
    top.add_argument("--baseline-rps", type=lt.positive, default=50.0)
    top.add_argument("--sources", default=lt.DEFAULT_SOURCES)
    top.add_argument("--workdir", type=Path)
    top.add_argument("--write-docs", action="store_true")
    top.add_argument(
        "--doc", type=Path, default=DOC, help="the doc --write-docs rewrites (default: %(default)s)"
    )
    top.add_argument("--render", type=Path, help="write the doc from the results a run kept in this workdir")
    args = top.parse_args()
    if args.render:
        saved = json.loads((args.render / "bench-args.json").read_text())
        for key, value in saved.items():
            setattr(args, key, value)
        results = json.loads((args.render / "load-test-results.json").read_text())
        direct = json.loads((args.render / "direct.json").read_text())
        doc = json.loads((args.render / "load-test-spike.json").read_text())
        write_docs(args, results, direct, doc, args.render, saved["when"], saved.get("machine"))
        return 0
    target = lt.load_target(args.vars)
    args.sources = lt.parse_sources(args.sources)
    if lt.outside_allowlist(args.sources, target.allowlist):
        print(f"the load sources must be in nginx_lb_allowlist of {args.vars}", file=sys.stderr)
        return 2
    sizes = lt.pool_sizes(target.stack)
    if sizes != {"frontend": 3, "backend": 3}:
        print(
            f"stack {target.stack} must run 3 frontend and 3 backend replicas, has {sizes}", file=sys.stderr
        )
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tenfold-bench-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    criteria = tl.Criteria()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    keep = ("users", "duration", "direct_seconds", "baseline_s", "spike_s", "after_s", "baseline_rps")
    facts = machine(WATCHED, {"locust": lt.locust_version()})  # what ran, before anything changes
    saved = {**{k: getattr(args, k) for k in keep}, "when": when, "machine": facts}
    (workdir / "bench-args.json").write_text(json.dumps(saved))
    (workdir / "direct").mkdir(exist_ok=True)
    direct = direct_vs_lb(args, target, workdir / "direct")
    (workdir / "direct.json").write_text(json.dumps(direct, indent=1) + "\n")
    ns = argparse.Namespace(
        users=args.users, duration=args.duration, sources=args.sources, paths="/,/api/work?ms=20"
    )
    (workdir / "scenarios").mkdir(exist_ok=True)
    results = lt.run_scenarios(ns, target, criteria, workdir / "scenarios")
    (workdir / "load-test-results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(tl.scenario_table(results["scenarios"]), flush=True)
    spike_sources = lt.parse_sources(lt.SPIKE_SOURCES)
    lt.check_spike_sources(spike_sources, lt.outside_allowlist(spike_sources, target.allowlist))
    spike_ns = argparse.Namespace(
        **{**vars(ns), "sources": spike_sources},
        baseline_rps=args.baseline_rps,
        factor=10.0,
        baseline_s=args.baseline_s,
        spike_s=args.spike_s,
        after_s=args.after_s,
        user_rate=1.0,
        monitor=True,
        monitor_settings=None,
        monitor_interval=2.0,
        monitor_window=10.0,
        restore=True,
    )
    (workdir / "spike").mkdir(exist_ok=True)
    doc = lt.run_spike(spike_ns, target, criteria, workdir / "spike")
    spike_file = workdir / "load-test-spike.json"
    spike_file.write_text(json.dumps(doc, indent=1) + "\n")
    tl.plot_spike(doc, workdir / "load-test-spike.png")
    print(tl.phase_table(doc["phases"]), flush=True)
    problems = tl.validate_results(results) + tl.validate_spike(doc)
    if problems:
        print("incomplete results: " + "; ".join(problems), file=sys.stderr)
        return 2
    print(f"results in {workdir}")
    if args.write_docs:
        write_docs(args, results, direct, doc, workdir, when, facts)
    return 0


def write_docs(
    args, results: dict, direct: list[dict], doc: dict, workdir: Path, when: str, facts: dict | None
) -> None:
    facts = facts or machine(WATCHED, {"locust": lt.locust_version()})
    write_section("bench-load", load_section(args, results, direct, facts, when), args.doc)
    write_section("bench-spike", spike_section(args, doc, when), args.doc)
    plot = args.doc.parent / PLOT.name
    shutil.copyfile(workdir / "load-test-spike.png", plot)
    print(f"wrote {args.doc} and {plot}")


if __name__ == "__main__":
    sys.exit(main())
