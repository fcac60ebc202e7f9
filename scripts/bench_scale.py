#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""scale.yml on a stack of its own (`tenfoldbench`): the wall time of each run of a fixed sequence of
operations, when new replicas serve, probe failures during scale-downs, and a profiled pass.

How it measures and what each figure means: the doc's section "Scaling" (its template:
docs/benchmarks/scale.md.j2). Every load and wait is bounded; what it brings up it removes again, also on
Ctrl-C or SIGTERM. --write-docs writes docs/benchmarks/scale.json and renders the doc.

    .venv/bin/python scripts/bench_scale.py --rounds 3 --write-docs
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchkit import host, results
from benchkit.host import BenchError
from benchkit.load import Load
from benchkit.stack import MAX_REPLICAS, PortTaken, Stack
from benchkit.stats import median, spread

STACK, BASE, POOL = "tenfoldbench", 48000, "backend"
# What a scale run reads: uncommitted changes there are named next to the commit in the doc.
WATCHED = ("collections", "playbooks", "scale.yml", "site.yml", "ansible.cfg", "inventories", "images")
PROBE_SOURCES = [f"127.0.0.{i}" for i in range(10, 30)]
# One round: backend replicas from -> to. Starts and ends at the pool's minimum of 3.
ROUND: tuple[tuple[int, int], ...] = ((3, 4), (4, 10), (10, 3), (3, 10), (10, 3), (3, 4), (4, 3))
# The profiled pass, after the rounds.
PROFILED: tuple[tuple[int, int], ...] = ((3, 4), (4, 3), (3, 10), (10, 3))
PROFILE_TOP = 6
# Times a scale run is started again when Docker could not bind a new replica's port (see the doc's Ports).
MAX_PORT_RETRIES = 3
# Targets of the issue "Scale without reloading nginx": (as it states it, operation, measure, limit in s).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("+1 replica serving <= 2.5 s after the command starts", "+1 (3->4)", "first_new_s", 2.5),
    ("3 -> 10 serving <= 5 s", "+7 (3->10)", "all_new_s", 5.0),
    ("-1 wall time <= 3 s (the probe's requests take milliseconds)", "-1 (4->3)", "wall_s", 3.0),
)
# ... and the +1 run's wall time against a no-op `ansible localhost -m ping` timed in the same run.
PING_RATIO = 3.5
MEASURES = {
    "first_new_s": "first new replica serving",
    "all_new_s": "all new replicas serving",
    "wall_s": "wall time",
}


@dataclass
class Measurement:
    start: int
    end: int
    wall_s: float
    playbook_s: float | None  # the scale-events callback's duration: playbook start to stats
    first_new_s: float | None = None  # scale-up: first new replica answered through the LB
    all_new_s: float | None = None  # scale-up: every new replica has answered
    last_leaving_s: float | None = None  # scale-down: last answer from a leaving replica
    probes: int = 0
    errors: list[str] = field(default_factory=list)
    probe_cpu: float | None = None  # the probe's CPU time over its lifetime, in cores
    ansible_cpu_s: float | None = None  # CPU time of ansible-playbook and the children it waited for
    machine_busy: float | None = None  # share of all the machine's CPU time that was busy during the run
    quiet_start: bool = True  # the machine was below --quiet-below busy just before the run
    port_wait_s: float = 0.0  # waited before the run until the new replicas' ports could be bound
    port_retries: int = 0  # earlier attempts that failed because Docker could not bind a port
    tasks: list[tuple[int, str, float]] = field(default_factory=list)  # profiled: (step, task, seconds)

    @property
    def op(self) -> str:
        return op_label(self.start, self.end)

    @property
    def up(self) -> bool:
        return self.end > self.start


NUMBERS = {  # the bench's number options: default, what it is
    "--rounds": (3, "rounds of the scale sequence"),
    "--rate": (50.0, "probe requests per second"),
    "--max-seconds": (300.0, "longest a scale run may take"),
    "--settle": (10.0, "seconds to keep probing after a scale-up for new replicas not seen yet"),
    "--pause": (2.0, "seconds between runs"),
    "--quiet-below": (25.0, "start a run once the machine was less busy (percent) for 3 s; 100: at once"),
    "--quiet-wait": (300.0, "longest wait for a quiet machine before a run starts anyway"),
    "--port-wait": (120.0, "longest wait before a scale-up until the new replicas' ports can be bound"),
}


def op_label(start: int, end: int) -> str:
    return f"{end - start:+d} ({start}->{end})"


def replica_name(i: int) -> str:
    return f"{STACK}-{POOL}-{i}"


def measure(stack: Stack, start: int, end: int, args: argparse.Namespace, profiled: bool) -> Measurement:
    """Scale the backend pool from start to end with the probe running."""
    new = {replica_name(i) for i in range(start + 1, end + 1)}
    leaving = {replica_name(i) for i in range(end + 1, start + 1)}
    env = stack.env()
    if profiled:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "tenfold.stack.scale_events,ansible.posix.profile_tasks"
        env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "all"
        env["PROFILE_TASKS_SORT_ORDER"] = "none"  # in the order they ran; this script sorts
    # A warm replica holds its index's port and is promoted in place: only the other new ports must be free.
    warm = set(stack.containers(f"name={STACK}-{POOL}-"))
    ports = [stack.port(POOL, i) for i in range(start + 1, end + 1) if f"{replica_name(i)}-warm" not in warm]
    port_wait = host.wait_for_ports(ports, args.port_wait)
    quiet = host.wait_for_quiet(args.quiet_below / 100, args.quiet_wait)
    budget = args.max_seconds + args.settle + 15
    with Load(
        stack.https_port, ["/api/whoami"], args.rate, 1, PROBE_SOURCES, budget, timeout=5, keepalive=False
    ) as probe:
        probe.wait_for_answer()
        cpu_before, children_before = host.machine_cpu(), host.children_cpu()
        t0 = time.monotonic()
        log = stack.scale(POOL, end, "-e", "trigger=bench", timeout=args.max_seconds, env=env)
        t_end = time.monotonic()
        cpu_after, children_after = host.machine_cpu(), host.children_cpu()
        deadline = t_end + args.settle
        while new and not new <= set(probe.first_seen(t0)) and time.monotonic() < deadline:
            time.sleep(0.05)
    event = (stack.events() or [{}])[-1]
    pools = {p.get("pool"): p for p in event.get("pools", [])}
    if event.get("result") != "ok" or (
        pools.get(POOL, {}).get("current"),
        pools.get(POOL, {}).get("target"),
    ) != (start, end):
        raise BenchError(f"scale run {start}->{end} recorded {event or 'nothing'} (log: {log})")
    check_replicas(stack, end)
    during = probe.since(t0, float("inf") if new else t_end)
    firsts = {name: at - t0 for name, at in probe.first_seen(t0).items() if name in new}
    from_leaving = [a.at - t0 for a in during if a.instance in leaving]
    return Measurement(
        start,
        end,
        t_end - t0,
        event.get("duration_s"),
        first_new_s=min(firsts.values()) if firsts else None,
        all_new_s=max(firsts.values()) if firsts and set(firsts) == new else None,
        last_leaving_s=max(from_leaving) if from_leaving else None,
        probes=len(during),
        errors=[a.outcome for a in during if a.outcome != "ok"],
        probe_cpu=probe.cpu_share,
        ansible_cpu_s=children_after - children_before,
        machine_busy=host.busy_share(cpu_before, cpu_after),
        quiet_start=quiet,
        port_wait_s=port_wait,
        tasks=parse_profile(log.read_text(errors="replace")) if profiled else [],
    )


def check_replicas(stack: Stack, expected: int) -> None:
    if stack.sizes()[POOL] != expected:
        raise BenchError(f"expected {expected} {POOL} replicas after the run, found {stack.sizes()}")


def measure_again_if_port_taken(
    stack: Stack, start: int, end: int, args: argparse.Namespace, profiled: bool = False
) -> Measurement:
    """measure(), run again (at most MAX_PORT_RETRIES times) when Docker could not bind a new replica's
    port. Such a run removed its new replicas and left the pool as it was, which is checked."""
    for attempt in range(MAX_PORT_RETRIES + 1):
        try:
            result = measure(stack, start, end, args, profiled)
        except PortTaken as exc:
            if attempt == MAX_PORT_RETRIES:
                raise
            check_replicas(stack, start)
            print(f"{op_label(start, end)}: a port was taken, running it again ({str(exc).splitlines()[0]})")
            time.sleep(args.pause)
            continue
        result.port_retries = attempt
        return result
    raise AssertionError("unreachable")


_TASK_LINE = re.compile(r"^(?P<name>.+?) -+ +(?P<secs>\d+\.\d+)s$")


def parse_profile(output: str) -> list[tuple[int, str, float]]:
    """The task lines of profile_tasks' TASKS RECAP (sort order none: in the order the tasks ran)."""
    _, found, recap = output.partition("TASKS RECAP")
    tasks: list[tuple[int, str, float]] = []
    for line in recap.splitlines() if found else []:
        match = _TASK_LINE.match(line.strip())
        if match:
            tasks.append((len(tasks) + 1, match["name"].strip(), float(match["secs"])))
    return tasks


def time_ping(stack: Stack) -> float:
    """Wall time of a no-op `ansible localhost -m ping`, with the project's configuration."""
    t0 = time.monotonic()
    cmd = [host.tool("ansible"), "localhost", "-m", "ping"]
    subprocess.run(cmd, cwd=host.ROOT, env=stack.env(), capture_output=True, timeout=60, check=True)
    return time.monotonic() - t0


def bench(stack: Stack, args: argparse.Namespace) -> tuple[list[Measurement], list[Measurement], list[float]]:
    runs: list[Measurement] = []
    pings: list[float] = []
    for number in range(1, args.rounds + 1):
        pings.append(time_ping(stack))
        print(f"round {number}: ansible localhost -m ping {pings[-1]:.2f} s", flush=True)
        for start, end in ROUND:
            time.sleep(args.pause)
            runs.append(measure_again_if_port_taken(stack, start, end, args))
            print(f"round {number}: {runs[-1]}", flush=True)
    profiled: list[Measurement] = []
    for start, end in () if args.no_profile else PROFILED:
        time.sleep(args.pause)
        profiled.append(measure_again_if_port_taken(stack, start, end, args, profiled=True))
        print(f"profiled: {profiled[-1]}", flush=True)
    return runs, profiled, pings


# --- the results ----------------------------------------------------------------------------------
def figures(
    runs: Sequence[Measurement], profiled: Sequence[Measurement], pings: Sequence[float], args
) -> dict:
    """What the doc's Scaling section shows: per operation, the targets, the ports, the profiles."""
    groups: dict[str, list[Measurement]] = {}
    for run in runs:
        groups.setdefault(run.op, []).append(run)
    operations = [
        {
            "op": op,
            "runs": len(group),
            "wall_s": spread(r.wall_s for r in group),
            "first_new_s": spread(r.first_new_s for r in group),
            "all_new_s": spread(r.all_new_s for r in group),
            "last_leaving_s": spread(r.last_leaving_s for r in group),
            "failed": sum(len(r.errors) for r in group),
            "probes": sum(r.probes for r in group),
            "errors": sorted({e for r in group for e in r.errors})[:3],
            "inside_s": median(r.playbook_s for r in group),
            "outside_s": median(r.wall_s - r.playbook_s for r in group if r.playbook_s is not None),
            "cpu_s": median(r.ansible_cpu_s for r in group),
            "busy": median(r.machine_busy for r in group),
        }
        for op, group in groups.items()
    ]
    wall, ping = median(r.wall_s for r in groups.get("+1 (3->4)", [])), median(pings)
    targets = [
        target(text, op, MEASURES[key], median(getattr(r, key) for r in groups.get(op, [])), limit)
        for text, op, key, limit in TARGETS
    ]
    if wall is not None and ping:
        text = f"+1 wall time <= {PING_RATIO:g} x a no-op `ansible localhost -m ping` ({ping:.2f} s)"
        targets.append(target(text, "+1 (3->4)", "wall time / ping", wall / ping, PING_RATIO, "x"))
    return {
        "stack": STACK,
        "https_port": BASE + 443,
        "frontend_port_base": BASE + 100,
        "backend_port_base": BASE + 200,
        "rounds": args.rounds,
        "sequence": ", ".join(op_label(a, b) for a, b in ROUND),
        "rate": args.rate,
        "ports": ports_note([*runs, *profiled]),
        "operations": operations,
        "targets": targets,
        "quiet": {"below": args.quiet_below, "wait_s": args.quiet_wait, "runs": len(runs)}
        | {"quiet": sum(r.quiet_start for r in runs)}
        if args.quiet_below < 100
        else None,
        "probe_cpu": median(r.probe_cpu for r in runs),
        "profile_top": PROFILE_TOP,
        "profiles": [profile(run) for run in profiled],
    }


def target(text: str, op: str, measure: str, value: float | None, limit: float, unit: str = "s") -> dict:
    shown = "-" if value is None else f"{value:.2f} {unit}"
    return {
        "target": text,
        "operation": op,
        "measure": measure,
        "median": shown,
        "met": value is not None and value <= limit,
    }


def ports_note(runs: Sequence[Measurement]) -> dict | None:
    """What the port guard did, when the replicas' ports lie in this machine's ephemeral port range."""
    span = host.ephemeral_range()
    ports = (BASE + 200 + 1, BASE + 200 + MAX_REPLICAS)
    if span is None or ports[1] < span[0] or ports[0] > span[1]:
        return None
    ups = [r for r in runs if r.up]
    waited = [r.port_wait_s for r in ups if r.port_wait_s >= 0.5]
    return {
        "replicas": list(ports),
        "ephemeral": list(span),
        "scale_ups": len(ups),
        "waited": len(waited),
        "max_wait_s": max(waited, default=None),
        "retried": sum(r.port_retries for r in ups),
    }


def profile(run: Measurement) -> dict:
    top = sorted(run.tasks, key=lambda t: t[2], reverse=True)[:PROFILE_TOP]
    rest = [t for t in run.tasks if t not in top]
    roles: dict[str, float] = {}
    for _, name, seconds in run.tasks:
        role = name.split(" : ", 1)[0] if " : " in name else "no role"
        roles[role] = roles.get(role, 0.0) + seconds
    return {
        "op": run.op,
        "wall_s": run.wall_s,
        "playbook_s": run.playbook_s,
        "busy": run.machine_busy,
        "quiet_start": run.quiet_start,
        "tasks": len(run.tasks),
        "median_task_s": statistics.median(t[2] for t in run.tasks) if run.tasks else 0.0,
        "roles": dict(sorted(roles.items(), key=lambda item: -item[1])),
        "top": [{"name": name.replace("|", "/"), "step": step, "s": s} for step, name, s in top],
        "rest": {"count": len(rest), "s": sum(t[2] for t in rest)} if rest else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = results.parser(__doc__, "scale", NUMBERS)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled pass")
    args = parser.parse_args(argv)
    if args.rounds < 1 or not 1 <= args.rate <= 200:
        parser.error("--rounds must be >= 1 and --rate between 1 and 200")
    workdir = Path(tempfile.mkdtemp(prefix=f"{STACK}-"))
    stack = Stack.own(STACK, BASE, workdir, nginx_lb_allowlist=["127.0.0.0/8"])  # the probe is never limited

    def measure_all() -> dict:
        with stack.up(args.port_wait):
            return figures(*bench(stack, args), args)

    return results.run("scale", __file__, host.machine(WATCHED), workdir, args.write_docs, measure_all)


if __name__ == "__main__":
    sys.exit(main())
