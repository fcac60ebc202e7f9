#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The stack on the test fleet (scripts/test-fleet.sh: an LB host and two Docker hosts reached over SSH).

Each round: `scale.yml` for the backend 3 -> 4 and 3 -> 10 (wall: the command's run; serving: from its
start until the last new replica first answers a client through the LB), each followed by a run back to 3;
then a Docker host cut under load with the monitor running on the LB host: from the cut until the LB sends
the host's backend replicas no new request (failing or drained), and until three backend replicas serve
again on the other host. The clients: 40 keep-alive clients on addresses of their own (none on an
allowlist), 40 req/s in all on `GET /api/whoami`, no retry; each failure is counted. After the cut the host
is restored and rejoins with `site.yml`.

    .venv/bin/python scripts/bench-fleet.py --rounds 3 --write-docs      (root: it makes the fleet)
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from benchlib import machine, section_head, write_section
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

WATCHED = ("collections", "monitor", "scale.yml", "scripts/test-fleet.sh", "scripts/bench-fleet.py")
POLICY = {"min_replicas": 3, "max_replicas": 10, "cooldown_s": 5.0, "up_cooldown_s": 2.0}
CLIENT_COUNT, RATE = 40, 40.0
WAIT_S = 180.0


class Clients:
    """Keep-alive HTTPS clients through the LB, paced, no retry: when each replica first answered, and the
    failures (a closed connection is one; the client then opens a new one)."""

    def __init__(self, count: int = CLIENT_COUNT, rate: float = RATE) -> None:
        self.first_seen: dict[str, float] = {}
        self.sent = 0
        self.failures: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.interval = count / rate
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.threads = [threading.Thread(target=self.run, args=(s,), daemon=True) for s in CLIENTS[:count]]

    def run(self, source: str) -> None:
        conn = None
        deadline = time.monotonic() + 3600  # bounded: a benchmark run is far shorter
        while not self.stopping.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            if conn is None:
                conn = http.client.HTTPSConnection(
                    ADDRESSES["fleet-lb"], 443, timeout=15, source_address=(source, 0), context=self.context
                )
            try:
                conn.request("GET", "/api/whoami")
                response = conn.getresponse()
                body = response.read()
                outcome = "ok" if response.status == 200 else f"HTTP {response.status}"
                instance = json.loads(body).get("instance") if outcome == "ok" else None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                outcome, instance = type(exc).__name__, None
                conn.close()
                conn = None
            with self.lock:
                self.sent += 1
                if outcome != "ok":
                    self.failures[outcome] += 1
                elif instance and instance not in self.first_seen:
                    self.first_seen[instance] = time.monotonic()
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=20)


def wait_until(predicate, timeout: float = WAIT_S, step: float = 0.5) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"not within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic()


def playbook(*args: str) -> float:
    """Run a playbook on the fleet; its wall time."""
    start = time.monotonic()
    run = fleet_playbook(*args)
    if run.rc != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {run.output[-3000:]}")
    return time.monotonic() - start


def scale(clients: Clients, replicas: int) -> dict:
    """scale.yml backend 3 -> replicas: wall, and serving (until every new replica has answered)."""
    new = [f"{STACK}-backend-{i}" for i in range(4, replicas + 1)]
    start = time.monotonic()
    wall = playbook("scale.yml", "-e", "pool=backend", "-e", f"replicas={replicas}")
    wait_until(lambda: all(name in clients.first_seen for name in new), timeout=60)
    serving = max(clients.first_seen[name] for name in new) - start
    playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    for name in new:
        clients.first_seen.pop(name, None)
    return {"wall_s": wall, "serving_s": serving}


def cut(workdir: Path) -> dict:
    monitor = FleetMonitor(workdir, {"backend": POLICY})
    monitor.service("start")
    try:
        with Clients() as clients:
            time.sleep(8)  # the monitor's window fills; the clients' connections are open
            before = clients.sent
            fleet_script("cut", "fleet-d1")
            start = time.monotonic()
            lb_off = wait_until(lambda: serving_at("backend", "fleet-d1") == []) - start
            restored = wait_until(lambda: len(serving_at("backend", "fleet-d2")) >= 3) - start
            time.sleep(5)
        failed = sum(clients.failures.values())
        return {
            "lb_off_s": lb_off,
            "restored_s": restored,
            "requests": clients.sent - before,
            "failed": failed,
            "failures": dict(clients.failures),
        }
    finally:
        fleet_script("restore", "fleet-d1")
        monitor.service("stop")
        playbook("site.yml")
        playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")


def how(failures: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in failures.items()) or "-"


def median(rounds: list[dict], key: str) -> str:
    values = [r[key] for r in rounds]
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def section(rounds: list[dict], when: str, facts: dict[str, str]) -> str:
    up1 = [r["up1"] for r in rounds]
    up7 = [r["up7"] for r in rounds]
    cuts = [r["cut"] for r in rounds]
    lines = [
        *section_head(
            "The stack on a fleet of hosts",
            "scripts/bench-fleet.py",
            when,
            f".venv/bin/python scripts/bench-fleet.py --rounds {len(rounds)} --write-docs",
            facts,
        ),
        "The test fleet: `fleet-lb` (the LB, the monitor) and two Docker hosts, `fleet-d1` and `fleet-d2`,",
        "each a network namespace with its own Docker engine and sshd on this one machine",
        "(`scripts/test-fleet.sh`), reached over SSH. Backend pool of 3 replicas placed in turn over the two",
        "hosts, one warm replica.",
        f"Clients: {CLIENT_COUNT} keep-alive clients on addresses of their own, {RATE:.0f} req/s in all on",
        "`GET /api/whoami` through the LB, no retry. Medians over the rounds (min-max), seconds.",
        "",
        "| figure | median (min-max) |",
        "| --- | --- |",
        f"| `scale.yml` backend 3 -> 4, wall | {median(up1, 'wall_s')} |",
        f"| `scale.yml` backend 3 -> 4, new replica serving | {median(up1, 'serving_s')} |",
        f"| `scale.yml` backend 3 -> 10, wall | {median(up7, 'wall_s')} |",
        f"| `scale.yml` backend 3 -> 10, all new replicas serving | {median(up7, 'serving_s')} |",
        f"| fleet-d1 cut -> the LB sends its backend replicas no new request | {median(cuts, 'lb_off_s')} |",
        f"| fleet-d1 cut -> 3 backend replicas serving on fleet-d2 | {median(cuts, 'restored_s')} |",
        "",
        "Requests during each cut (from the cut to 5 s after the capacity was back), and those that failed:",
        "",
        "| round | requests | failed | how |",
        "| --- | --- | --- | --- |",
        *(f"| {i} | {c['requests']} | {c['failed']} | {how(c['failures'])} |" for i, c in enumerate(cuts, 1)),
        "",
    ]
    return "\n".join(lines)


def measure(count: int, workdir: Path, rounds: list[dict]) -> None:
    """The fleet up, the stack on it, `count` rounds appended to `rounds`; the fleet down again."""
    fleet_script("down")
    try:
        for step in (("up",), ("images", *IMAGES)):
            run = fleet_script(*step, timeout=900)
            if run.rc != 0:
                raise RuntimeError(f"test-fleet.sh {step[0]} failed: {run.output[-2000:]}")
        playbook("site.yml")
        for index in range(count):
            with Clients() as clients:
                time.sleep(3)
                found = {"up1": scale(clients, 4), "up7": scale(clients, 10)}
            here = workdir / f"round{index + 1}"
            here.mkdir()
            found["cut"] = cut(here)
            rounds.append(found)
            print(f"round {index + 1}: {json.dumps(found)}", flush=True)
    finally:
        fleet_playbook("playbooks/down.yml")
        fleet_script("down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 5:
        print("--rounds must be 1-5", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-fleet-"))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine(WATCHED)
    rounds: list[dict] = []
    with fleet_lock():
        measure(args.rounds, workdir, rounds)
    (workdir / "rounds.json").write_text(json.dumps(rounds, indent=2))
    if args.write_docs:
        write_section("bench-fleet", section(rounds, when, facts))
        print("wrote docs/benchmarks.md")
    print(f"results in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
