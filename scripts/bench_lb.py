#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The LB's own cost before and after members became data (the Lua balancer): two stacks, one from a
worktree of `--before`, measured in turn in one run.

How it measures and what each figure means: the doc's section "The LB's own cost" (its template:
docs/benchmarks/lb.md.j2). Every load and wait is bounded; what it brings up it removes again, also on Ctrl-C
or SIGTERM. --write-docs writes docs/benchmarks/lb.json and renders the doc.

    .venv/bin/python scripts/bench_lb.py --rounds 3 --write-docs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from benchkit import host, results
from benchkit import stats as tl
from benchkit.host import ROOT
from benchkit.locust import LocustRun, locust_version
from benchkit.stack import Stack

WATCHED = (
    "collections/ansible_collections/tenfold/stack/roles/nginx_lb",
    "images/nginx",
    "scripts/bench_lb.py",
)
BEFORE = "5ad29bc"  # main before the Lua balancer (issue "Scale without reloading nginx")
STACKS = {"before": ("tenfoldlbold", 44000), "now": ("tenfoldlbnew", 45000)}
LATENCY_USERS, LATENCY_RATE = 10, 5
HEALTH_USERS = 50


def measure(stack: Stack, workdir: Path, seconds: float) -> dict:
    """One round on one stack: p50 direct and through the LB at 10 paced users, and /health req/s."""
    found: dict[str, dict] = {}
    paced = {"TENFOLD_LOAD_USER_RATE": str(LATENCY_RATE)}
    sources = [f"127.0.5.{i}" for i in range(1, LATENCY_USERS + 1)]
    for how, url in (("direct", f"http://127.0.0.1:{stack.port('backend', 1)}"), ("lb", stack.url)):
        run = LocustRun(workdir, how, url, sources, "/api/whoami", env=paced)
        run.users("PacedUser", LATENCY_USERS, seconds)
        found[how] = tl.summarize(tl.read_seconds(run.seconds_file), seconds)
    sources = [f"127.0.6.{i}" for i in range(1, HEALTH_USERS + 1)]
    run = LocustRun(workdir, "health", stack.url, sources, "/health")
    run.users("SiteUser", HEALTH_USERS, seconds)
    found["health"] = tl.summarize(tl.read_seconds(run.seconds_file), seconds)
    return found


def figures(rounds: list[dict]) -> dict[str, dict]:
    """Per stack, medians over the rounds."""
    found = {}
    for name in STACKS:
        mine = [r[name] for r in rounds]
        found[name] = {
            "direct_ms": statistics.median(m["direct"]["p50_s"] for m in mine) * 1000,
            "lb_ms": statistics.median(m["lb"]["p50_s"] for m in mine) * 1000,
            "added_ms": statistics.median(m["lb"]["p50_s"] - m["direct"]["p50_s"] for m in mine) * 1000,
            "health_rps": statistics.median(m["health"]["rps"] for m in mine),
            "failed": sum(m[k]["failed"] for m in mine for k in ("direct", "lb", "health")),
            "sent": sum(m[k]["requests"] for m in mine for k in ("direct", "lb", "health")),
        }
    return found


def targets(got: dict[str, dict]) -> list[dict]:
    before, now = got["before"], got["now"]
    ratio = now["health_rps"] / before["health_rps"] if before["health_rps"] else float("nan")
    return [
        {
            "target": "LB added latency, p50 at 10 users: no worse than before",
            "measured": f"{now['added_ms']:.2f} ms (before {before['added_ms']:.2f} ms)",
            "met": now["added_ms"] <= max(before["added_ms"], 1.0),
        },
        {
            "target": "the LB's requests/s on /health: within 10 % of before",
            "measured": f"{now['health_rps']:.0f} (before {before['health_rps']:.0f}: {ratio:.0%})",
            "met": ratio >= 0.9,
        },
    ]


def measure_all(args: argparse.Namespace, workdir: Path) -> dict:
    rounds: list[dict] = []
    with host.worktree(args.before, workdir / "before") as before, ExitStack() as up:
        checkouts = {"before": before, "now": ROOT}
        common = {"nginx_lb_allowlist": [], "images_build": False}
        stacks = {
            name: up.enter_context(
                Stack.own(stack, base, workdir / f"stack-{name}", checkouts[name], **common).up()
            )
            for name, (stack, base) in STACKS.items()
        }
        for index in range(args.rounds):
            found = {}
            for name in list(STACKS) if index % 2 == 0 else list(reversed(STACKS)):  # alternate the first
                (workdir / f"r{index + 1}-{name}").mkdir()
                found[name] = measure(stacks[name], workdir / f"r{index + 1}-{name}", args.seconds)
                print(f"round {index + 1} {name}: {found[name]}", flush=True)
            rounds.append(found)
    got = figures(rounds)
    found = {
        "before": args.before,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "stacks": got,
        "targets": targets(got),
    }
    return found | {
        "latency_users": LATENCY_USERS,
        "latency_rate": LATENCY_RATE,
        "health_users": HEALTH_USERS,
    }


def main() -> int:
    parser = results.parser(__doc__, "lb", {"--rounds": (3, "rounds, 1-5"), "--seconds": (20.0, "per run")})
    parser.add_argument("--before", default=BEFORE, help="main before the Lua balancer (default %(default)s)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 5:
        parser.error("--rounds must be 1-5")
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-lb-"))
    machine = host.machine(WATCHED, locust=locust_version())
    return results.run("lb", __file__, machine, workdir, args.write_docs, lambda: measure_all(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
