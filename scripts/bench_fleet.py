#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The stack on the test fleet (scripts/test-fleet.sh: an LB host and two Docker hosts reached over SSH):
scale.yml's times and a Docker host cut under load, with the monitor on the LB host.

How it measures and what each figure means: the doc's section "The stack on a fleet of hosts" (its template:
docs/benchmarks/fleet.md.j2). Every load and wait is bounded; what it brings up it removes again, also on
Ctrl-C or SIGTERM. --write-docs writes docs/benchmarks/fleet.json and renders the doc.

    .venv/bin/python scripts/bench_fleet.py --rounds 3 --write-docs      (root: it makes the fleet)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchkit import host, results
from benchkit.host import BenchError, wait_until
from benchkit.load import Load
from benchkit.stats import spread
from fleetlib import (
    ADDRESSES,
    CLIENTS,
    IMAGES,
    STACK,
    FleetMonitor,
    fleet_lock,
    fleet_playbook,
    fleet_script,
    serving_at,
)

WATCHED = ("collections", "monitor", "scale.yml", "scripts/test-fleet.sh", "scripts/bench_fleet.py")
POLICY = {"min_replicas": 3, "max_replicas": 10, "cooldown_s": 5.0, "up_cooldown_s": 2.0}
CLIENT_COUNT, RATE = 40, 40.0
WAIT_S = 180.0


def clients() -> Load:
    """Keep-alive HTTPS clients through the LB, paced, no retry, an address each: when each replica first
    answered, and the failures (a closed connection is one; the client then opens a new one)."""
    return Load(443, ["/api/whoami"], RATE, CLIENT_COUNT, CLIENTS[:CLIENT_COUNT], 3600, ADDRESSES["fleet-lb"])


def playbook(*args: str) -> float:
    """Run a playbook on the fleet; its wall time."""
    start = time.monotonic()
    run = fleet_playbook(*args)
    if run.rc != 0:
        raise BenchError(f"{' '.join(args)} failed: {run.output[-3000:]}")
    return time.monotonic() - start


def scale(load: Load, replicas: int) -> dict:
    """scale.yml backend 3 -> replicas: wall, and serving (until every new replica has answered)."""
    new = [f"{STACK}-backend-{i}" for i in range(4, replicas + 1)]
    start = time.monotonic()
    wall = playbook("scale.yml", "-e", "pool=backend", "-e", f"replicas={replicas}")
    wait_until(lambda: set(new) <= set(load.first_seen(start)), 60, "every new replica answered")
    serving = max(load.first_seen(start)[name] for name in new) - start
    playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    return {"wall_s": wall, "serving_s": serving}


def cut(workdir: Path) -> dict:
    monitor = FleetMonitor(workdir, {"backend": POLICY})
    monitor.service("start")
    try:
        with clients() as load:
            time.sleep(8)  # the monitor's window fills; the clients' connections are open
            before = load.tally.sent
            fleet_script("cut", "fleet-d1")
            start = time.monotonic()
            lb_off = wait_until(lambda: serving_at("backend", "fleet-d1") == [], WAIT_S, "d1 out") - start
            restored = (
                wait_until(lambda: len(serving_at("backend", "fleet-d2")) >= 3, WAIT_S, "d2 serves") - start
            )
            time.sleep(5)
        return {
            "lb_off_s": lb_off,
            "restored_s": restored,
            "requests": load.tally.sent - before,
            "failed": load.tally.failed,
            "failures": {kind.split(": ", 1)[-1]: n for kind, n in load.tally.failures.items()},
        }
    finally:
        fleet_script("restore", "fleet-d1")
        monitor.service("stop")
        playbook("site.yml")
        playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")


FIGURES = (  # the doc's name of a figure, and where it is in a round's results
    ("`scale.yml` backend 3 -> 4, wall", "up1", "wall_s"),
    ("`scale.yml` backend 3 -> 4, new replica serving", "up1", "serving_s"),
    ("`scale.yml` backend 3 -> 10, wall", "up7", "wall_s"),
    ("`scale.yml` backend 3 -> 10, all new replicas serving", "up7", "serving_s"),
    ("fleet-d1 cut -> the LB sends its backend replicas no new request", "cut", "lb_off_s"),
    ("fleet-d1 cut -> 3 backend replicas serving on fleet-d2", "cut", "restored_s"),
)


def figures(rounds: list[dict], busy: float | None) -> dict:
    return {
        "clients": CLIENT_COUNT,
        "rate": RATE,
        # the whole machine, all work on it: a shared machine's other work shows here, and in the times
        "machine_busy": None if busy is None else round(busy, 2),
        "figures": [
            {"figure": name, "seconds": spread(r[part][key] for r in rounds)} for name, part, key in FIGURES
        ],
        "cuts": [{k: r["cut"][k] for k in ("requests", "failed", "failures")} for r in rounds],
    }


def measure_all(args: argparse.Namespace, workdir: Path) -> dict:
    """The fleet up (once another user of it let go), the stack on it, the rounds; the fleet down again."""
    rounds: list[dict] = []
    with fleet_lock():
        cpu = host.machine_cpu()
        fleet_script("down")
        try:
            for step in (("up",), ("images", *IMAGES)):
                run = fleet_script(*step, timeout=900)
                if run.rc != 0:
                    raise BenchError(f"test-fleet.sh {step[0]} failed: {run.output[-2000:]}")
            playbook("site.yml")
            for index in range(args.rounds):
                with clients() as load:
                    time.sleep(3)
                    found = {"up1": scale(load, 4), "up7": scale(load, 10)}
                (workdir / f"round{index + 1}").mkdir()
                found["cut"] = cut(workdir / f"round{index + 1}")
                rounds.append(found)
                print(f"round {index + 1}: {json.dumps(found)}", flush=True)
        finally:
            fleet_playbook("playbooks/down.yml")
            fleet_script("down")
        busy = host.busy_share(cpu, host.machine_cpu())
    return figures(rounds, busy)


def main() -> int:
    parser = results.parser(__doc__, "fleet", {"--rounds": (3, "rounds, 1-5")})
    args = parser.parse_args()
    if not 1 <= args.rounds <= 5:
        parser.error("--rounds must be 1-5")
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-fleet-"))
    machine = host.machine(WATCHED)
    return results.run(
        "fleet", __file__, machine, workdir, args.write_docs, lambda: measure_all(args, workdir)
    )


if __name__ == "__main__":
    sys.exit(main())
