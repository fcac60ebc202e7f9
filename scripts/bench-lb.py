#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The LB's own cost before and after members became data (the Lua balancer), side by side in one run.

Two stacks of the script's own: one from a worktree of `--before` (main before the Lua balancer: nginx's
own upstreams in its config) and one from this checkout, on the same images (this checkout's, not rebuilt),
3 backend replicas each, no allowlist. Each round measures the two in turn (which goes first alternates;
the other is idle): the added latency, 10 paced users of 5 req/s each on `GET /api/whoami` (an address
each, keep-alive, no retry) straight to backend replica 1 and then through the LB; and the LB's own
requests/s, 50 closed-model users on `GET /health` (nginx answers it itself).

    .venv/bin/python scripts/bench-lb.py --rounds 3 --write-docs
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import load_test as lt
import tenfold_load as tl
import yaml
from benchlib import ROOT, BenchError, leftovers, machine, run_playbook, section_head, write_section

WATCHED = (
    "collections/ansible_collections/tenfold/stack/roles/nginx_lb",
    "images/nginx",
    "scripts/bench-lb.py",
)
BEFORE = "5ad29bc"  # main before the Lua balancer (issue "Scale without reloading nginx")
COMMON = {"nginx_lb_listen_address": "127.0.0.1", "nginx_lb_allowlist": [], "images_build": False}
STACKS = {
    "before": {"tenfold_stack": "tenfoldlbold", "base": 44000},
    "now": {"tenfold_stack": "tenfoldlbnew", "base": 45000},
}
LATENCY_USERS, LATENCY_RATE = 10, 5
HEALTH_USERS = 50


def stack_vars(name: str) -> dict:
    stack, base = STACKS[name]["tenfold_stack"], STACKS[name]["base"]
    return {
        **COMMON,
        "tenfold_stack": stack,
        "nginx_lb_http_port": base + 80,
        "nginx_lb_https_port": base + 443,
        "nginx_lb_status_port": base + 81,
        "app_pools_frontend_port_base": base + 100,
        "app_pools_backend_port_base": base + 200,
    }


def measure(target: lt.Target, backend_port: int, workdir: Path, seconds: float) -> dict:
    """One round on one stack: p50 direct and through the LB at 10 paced users, and /health req/s."""
    found: dict[str, dict] = {}
    paced = {"TENFOLD_LOAD_USER_RATE": str(LATENCY_RATE)}
    sources = [f"127.0.5.{i}" for i in range(1, LATENCY_USERS + 1)]
    for how, host in (("direct", f"http://127.0.0.1:{backend_port}"), ("lb", target.url)):
        run = lt.LocustRun(workdir, how, target, sources, "/api/whoami", env=paced, host=host)
        users = str(LATENCY_USERS)
        run.run(["PacedUser", "-u", users, "-r", users, "-t", f"{seconds:g}s"], limit_s=seconds + 90)
        found[how] = tl.summarize(tl.read_seconds(run.seconds_file), seconds)
    sources = [f"127.0.6.{i}" for i in range(1, HEALTH_USERS + 1)]
    run = lt.LocustRun(workdir, "health", target, sources, "/health")
    users = str(HEALTH_USERS)
    run.run(["SiteUser", "-u", users, "-r", users, "-t", f"{seconds:g}s"], limit_s=seconds + 90)
    found["health"] = tl.summarize(tl.read_seconds(run.seconds_file), seconds)
    return found


def median(values: list[float]) -> float:
    return statistics.median(values)


def section(args, rounds: list[dict], when: str, facts: dict) -> str:
    def figures(name: str) -> dict[str, float]:
        mine = [r[name] for r in rounds]
        return {
            "direct": median([m["direct"]["p50_s"] for m in mine]) * 1000,
            "lb": median([m["lb"]["p50_s"] for m in mine]) * 1000,
            "added": median([(m["lb"]["p50_s"] - m["direct"]["p50_s"]) for m in mine]) * 1000,
            "health": median([m["health"]["rps"] for m in mine]),
            "failed": sum(m[k]["failed"] for m in mine for k in ("direct", "lb", "health")),
            "sent": sum(m[k]["requests"] for m in mine for k in ("direct", "lb", "health")),
        }

    got = {name: figures(name) for name in STACKS}
    command = f".venv/bin/python scripts/bench-lb.py --rounds {args.rounds} --seconds {args.seconds:g}"
    command += " --write-docs"
    method = (
        "**Method.** Two stacks of the script's own, on the same images (not rebuilt) with 3 backend replicas"
        f" each and no allowlist: *before* from a worktree of `{args.before}` (main before the Lua balancer:"
        " the members in nginx's config) and *now* from this checkout. Each of the"
        f" {args.rounds} rounds measures the two in turn, which goes first alternating, the other idle:"
        f" {LATENCY_USERS} paced users of {LATENCY_RATE} req/s each on `GET /api/whoami` (an address each,"
        f" 127.0.5.1-{LATENCY_USERS}, keep-alive, no retry), {args.seconds:g} s straight to backend replica 1"
        f" and {args.seconds:g} s through the LB; then {HEALTH_USERS} closed-model users (127.0.6.1-"
        f"{HEALTH_USERS}) on `GET /health`, which nginx answers itself, for {args.seconds:g} s. Medians over"
        " the rounds; *added* is the median of each round's LB p50 minus its direct p50."
    )
    rows = [
        f"| {name} | {g['direct']:.2f} | {g['lb']:.2f} | {g['added']:.2f} | {g['health']:.0f} |"
        f" {g['failed']} / {g['sent']} |"
        for name, g in got.items()
    ]
    before, now = got["before"], got["now"]
    ratio = now["health"] / before["health"] if before["health"] else float("nan")
    targets = [
        (
            "LB added latency, p50 at 10 users: no worse than before",
            f"{now['added']:.2f} ms (before {before['added']:.2f} ms)",
            now["added"] <= max(before["added"], 1.0),
        ),
        (
            "the LB's requests/s on /health: within 10 % of before",
            f"{now['health']:.0f} (before {before['health']:.0f}: {ratio:.0%})",
            ratio >= 0.9,
        ),
    ]
    lines = [
        *section_head(
            "The LB's own cost, before and after the Lua balancer",
            "scripts/bench-lb.py",
            when,
            command,
            facts,
        ),
        *textwrap.wrap(method, 110),
        "",
        "| stack | direct p50 ms | through the LB p50 ms | added p50 ms | /health req/s | failed / sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        'Targets (issue "Scale without reloading nginx"):',
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        *(f"| {name} | {value} | {'met' if ok else 'not met'} |" for name, value, ok in targets),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=lt.positive, default=20.0)
    parser.add_argument("--before", default=BEFORE, help="main before the Lua balancer (default %(default)s)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 5:
        print("--rounds must be 1-5", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-lb-"))
    worktree = workdir / "before"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine(WATCHED, {"locust": lt.locust_version()})
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.before], cwd=ROOT, check=True)
    checkouts = {"before": worktree, "now": ROOT}
    targets, files = {}, {}
    rounds: list[dict] = []
    try:
        for name in STACKS:
            files[name] = workdir / f"{name}.yml"
            files[name].write_text(yaml.safe_dump(stack_vars(name)))
            targets[name] = lt.load_target(files[name])
            run_playbook("site.yml", files[name], workdir / f"site-{name}.log", checkouts[name])
        for index in range(args.rounds):
            order = list(STACKS) if index % 2 == 0 else list(reversed(STACKS))
            found = {}
            for name in order:
                here = workdir / f"r{index + 1}-{name}"
                here.mkdir()
                backend_port = stack_vars(name)["app_pools_backend_port_base"] + 1
                found[name] = measure(targets[name], backend_port, here, args.seconds)
                print(
                    f"round {index + 1} {name}: direct p50 {found[name]['direct']['p50_s'] * 1000:.2f} ms,"
                    f" LB p50 {found[name]['lb']['p50_s'] * 1000:.2f} ms,"
                    f" /health {found[name]['health']['rps']:.0f} req/s",
                    flush=True,
                )
            rounds.append(found)
    finally:
        for name, path in files.items():
            try:
                run_playbook("playbooks/down.yml", path, workdir / f"down-{name}.log", checkouts[name])
            except BenchError as exc:
                print(exc, file=sys.stderr)
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    left = [item for name in STACKS for item in leftovers(STACKS[name]["tenfold_stack"])]
    if left:
        print(f"left behind: {left}", file=sys.stderr)
        return 1
    if args.write_docs:
        write_section("bench-lb", section(args, rounds, when, facts))
        print("wrote docs/benchmarks.md")
    print(f"results in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
