#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Benchmark scale.yml on a stack of its own: wall time of each run, time until new replicas serve.

Brings up the stack `tenfoldbench` (ports 48080/48443/48081, app ports 48100+/48200+) with site.yml, scales
its backend pool through a fixed sequence of operations (+1, +6, -7, +7, -7, +1, -1) for N rounds, and
always removes the stack again with playbooks/down.yml, also on Ctrl-C or SIGTERM.

For every `ansible-playbook scale.yml` it measures the wall time of the whole process. Meanwhile a probe
thread sends about 50 GET /api/whoami per second through the load balancer (a fresh TLS connection per
request, from 127.0.0.x addresses): for a scale-up it gives the time from the command's start until each new
replica answered, for a scale-down whether any request failed. One extra, profiled pass
(ansible.posix.profile_tasks) shows which tasks take the time. Every loop is bounded.

    .venv/bin/python scripts/bench-scale.py [--rounds 3] [--write-docs]

--write-docs rewrites the Scaling section of docs/benchmarks.md (between the bench-scale markers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.client import HTTPSConnection
from pathlib import Path

from ansible_collections.tenfold.stack.plugins.module_utils.pool import LABEL_POOL, LABEL_STACK
from benchlib import (
    BIN,
    DOC,
    ROOT,
    BenchError,
    ansible_playbook,
    busy_share,
    docker_names,
    machine,
    machine_cpu,
    on_sigterm,
    write_section,
)
from benchlib import leftovers as stack_leftovers

STACK = "tenfoldbench"
# What a scale run reads: uncommitted changes there are named next to the commit in the doc.
WATCHED = ("collections", "playbooks", "scale.yml", "site.yml", "ansible.cfg", "inventories", "images")
POOL = "backend"
HTTP_PORT, HTTPS_PORT, STATUS_PORT = 48080, 48443, 48081
FRONTEND_PORT_BASE, BACKEND_PORT_BASE = 48100, 48200
MAX_REPLICAS = 10
STACK_VARS: dict[str, object] = {
    "tenfold_stack": STACK,
    "nginx_lb_listen_address": "127.0.0.1",
    "nginx_lb_http_port": HTTP_PORT,
    "nginx_lb_https_port": HTTPS_PORT,
    "nginx_lb_status_port": STATUS_PORT,
    "app_pools_frontend_port_base": FRONTEND_PORT_BASE,
    "app_pools_backend_port_base": BACKEND_PORT_BASE,
    # The probe must never be rate- or connection-limited.
    "nginx_lb_allowlist": ["127.0.0.0/8"],
}
PROBE_PATH = "/api/whoami"
PROBE_SOURCES = tuple(f"127.0.0.{i}" for i in range(10, 30))
# One round: backend replicas from -> to. Starts and ends at the pool's minimum of 3.
ROUND: tuple[tuple[int, int], ...] = ((3, 4), (4, 10), (10, 3), (3, 10), (10, 3), (3, 4), (4, 3))
# The profiled pass, after the rounds.
PROFILED: tuple[tuple[int, int], ...] = ((3, 4), (4, 3), (3, 10), (10, 3))
PROFILE_TOP = 6
# Times a scale run is started again when Docker could not bind a new replica's port (see port_busy).
MAX_PORT_RETRIES = 3
# Width the doc's paragraphs are wrapped at.
WRAP = 110
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


# --- records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One probe request: when it ended (monotonic), which instance answered, or why it failed."""

    at: float
    instance: str | None
    error: str | None = None


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
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    probe_cpu: float | None = None  # the probe thread's CPU time over its lifetime, in cores
    ansible_cpu_s: float | None = None  # CPU time of ansible-playbook and the children it waited for
    machine_busy: float | None = None  # share of all the machine's CPU time that was busy during the run
    quiet_start: bool = True  # the machine was below --quiet-below busy just before the run
    port_wait_s: float = 0.0  # waited before the run until the new replicas' ports could be bound
    port_retries: int = 0  # earlier attempts that failed because Docker could not bind a port

    @property
    def op(self) -> str:
        return op_label(self.start, self.end)

    @property
    def up(self) -> bool:
        return self.end > self.start


@dataclass(frozen=True)
class TaskTime:
    step: int  # position in the run, from 1
    name: str
    seconds: float


@dataclass(frozen=True)
class Profile:
    run: Measurement
    tasks: list[TaskTime]


class PortTaken(BenchError):
    """Docker could not publish a new replica's port: a socket on this machine held it (see port_busy)."""


def op_label(start: int, end: int) -> str:
    return f"{end - start:+d} ({start}->{end})"


def replica_name(i: int) -> str:
    return f"{STACK}-{POOL}-{i}"


# --- the probe ------------------------------------------------------------------------------------
class Probe(threading.Thread):
    """GET /api/whoami through the LB at a steady rate, one fresh TLS connection per request.

    Stops when told, or by itself after max_seconds or max_requests, whatever happens first.
    """

    def __init__(self, rate: float, max_seconds: float, timeout: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.interval = 1.0 / rate
        self.max_seconds = max_seconds
        self.max_requests = int(rate * max_seconds) + 1
        self.timeout = timeout
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.cpu_share: float | None = None  # CPU time of this thread / its lifetime, once stopped
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def run(self) -> None:
        began, cpu = time.monotonic(), time.thread_time()
        try:
            self.loop(began)
        finally:
            self.cpu_share = (time.thread_time() - cpu) / max(time.monotonic() - began, 1e-6)

    def loop(self, began: float) -> None:
        due = began
        sources = itertools.cycle(PROBE_SOURCES)
        for _ in range(self.max_requests):
            if self.halt.is_set() or time.monotonic() - began > self.max_seconds:
                break
            answer = self.request(next(sources))
            with self.lock:
                self.answers.append(answer)
            due = max(due + self.interval, time.monotonic())  # a slow answer delays, never bursts
            self.halt.wait(max(0.0, due - time.monotonic()))

    def request(self, source: str) -> Answer:
        conn = HTTPSConnection(
            "127.0.0.1",
            HTTPS_PORT,
            timeout=self.timeout,
            source_address=(source, 0),
            context=self.context,
        )
        try:
            conn.request("GET", PROBE_PATH, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return Answer(time.monotonic(), None, f"HTTP {response.status}")
            return Answer(time.monotonic(), str(json.loads(body).get("instance")))
        except (OSError, ValueError) as exc:
            return Answer(time.monotonic(), None, f"{type(exc).__name__}: {exc}"[:160])
        finally:
            conn.close()

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)

    def seen(self, names: set[str]) -> set[str]:
        return {a.instance for a in self.snapshot() if a.instance in names}

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=self.timeout + 5)


@contextmanager
def probing(rate: float, max_seconds: float) -> Iterator[Probe]:
    """A running probe that has had one good answer (bounded), stopped on the way out."""
    probe = Probe(rate, max_seconds)
    probe.start()
    try:
        deadline = time.monotonic() + 15
        while not any(a.instance for a in probe.snapshot()):
            if time.monotonic() > deadline or not probe.is_alive():
                last = probe.snapshot()[-1:]
                raise BenchError(f"the load balancer on 127.0.0.1:{HTTPS_PORT} does not answer: {last}")
            time.sleep(0.05)
        yield probe
    finally:
        probe.stop()


# --- running playbooks ----------------------------------------------------------------------------
@dataclass
class Runner:
    """Runs the project's playbooks against the bench stack; keeps each run's output in workdir."""

    workdir: Path
    timeout: float
    runs: int = 0

    @property
    def vars_file(self) -> Path:
        return self.workdir / "stack-vars.json"

    @property
    def events_log(self) -> Path:
        return self.workdir / "scale-events.jsonl"

    def write_vars(self) -> None:
        values = {**STACK_VARS, "tenfold_state_dir": str(self.workdir)}  # scale lock and events here
        self.vars_file.write_text(json.dumps(values, indent=2) + "\n")

    def env(self, callbacks: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "COLUMNS": "160",
        }
        if callbacks:
            env["ANSIBLE_CALLBACKS_ENABLED"] = callbacks
            env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "all"
            env["PROFILE_TASKS_SORT_ORDER"] = "none"  # in the order they ran; this script sorts
        return env

    def command(self, playbook: str, *args: str) -> list[str]:
        return [ansible_playbook(), playbook, "-e", f"@{self.vars_file}", *args]

    def start(self, playbook: str, *args: str, callbacks: str | None = None) -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        log = self.workdir / f"{self.runs:03d}-{Path(playbook).stem}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                self.command(playbook, *args),
                cwd=ROOT,
                env=self.env(callbacks),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches this script, which stops the run itself
            )
        return proc, log

    def finish(self, proc: subprocess.Popen, log: Path, timeout: float | None = None) -> None:
        """Wait for a run (bounded); stop it on timeout or Ctrl-C; fail with its output if it failed."""
        limit = timeout or self.timeout
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise BenchError(
                f"{' '.join(map(str, proc.args))} took longer than {limit:g} s (log: {log})"
            ) from None
        except KeyboardInterrupt:
            stop_process(proc)
            raise
        if rc != 0:
            text = log.read_text(errors="replace")
            error = PortTaken if "address already in use" in text else BenchError
            raise error(f"{' '.join(map(str, proc.args))} exited {rc} (log: {log}):\n{text[-4000:]}")

    def run(self, playbook: str, *args: str, timeout: float | None = None) -> Path:
        proc, log = self.start(playbook, *args)
        self.finish(proc, log, timeout)
        return log

    def last_event(self) -> dict:
        lines = self.events_log.read_text().splitlines() if self.events_log.exists() else []
        return json.loads(lines[-1]) if lines else {}


def stop_process(proc: subprocess.Popen) -> None:
    """SIGINT to the run's process group (ansible's own Ctrl-C), then SIGTERM, then SIGKILL; bounded."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


# --- one measured scale run -----------------------------------------------------------------------
def measure(
    runner: Runner, start: int, end: int, args: argparse.Namespace, profiled: bool = False
) -> tuple[Measurement, Path]:
    """Scale the backend pool from start to end with the probe running; returns (Measurement, log)."""
    new = {replica_name(i) for i in range(start + 1, end + 1)}
    leaving = {replica_name(i) for i in range(end + 1, start + 1)}
    callbacks = "tenfold.stack.scale_events,ansible.posix.profile_tasks" if profiled else None
    port_wait = wait_for_ports([BACKEND_PORT_BASE + i for i in range(start + 1, end + 1)], args.port_wait)
    quiet = wait_for_quiet(args.quiet_below / 100, args.quiet_wait)
    with probing(args.rate, args.max_seconds + args.settle + 15) as probe:
        cpu_before, children_before = machine_cpu(), children_cpu()
        t0 = time.monotonic()
        proc, log = runner.start(
            "scale.yml",
            "-e",
            f"pool={POOL}",
            "-e",
            f"replicas={end}",
            "-e",
            "trigger=bench",
            callbacks=callbacks,
        )
        runner.finish(proc, log, args.max_seconds)
        t_end = time.monotonic()
        cpu_after, children_after = machine_cpu(), children_cpu()
        deadline = t_end + args.settle
        while new and probe.seen(new) != new and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = probe.snapshot()
    event = runner.last_event()
    check_event(event, start, end, log)
    result = Measurement(start, end, t_end - t0, event.get("duration_s"))
    during = [a for a in answers if a.at >= t0 and (new or a.at <= t_end)]
    result.probes = len(during)
    result.errors = [a.error for a in during if a.error]
    result.failed = len(result.errors)
    firsts: dict[str, float] = {}
    for answer in during:
        if answer.instance in new and answer.instance not in firsts:
            firsts[answer.instance] = answer.at - t0
    if new and firsts:
        result.first_new_s = min(firsts.values())
        result.all_new_s = max(firsts.values()) if set(firsts) == new else None
    from_leaving = [a.at - t0 for a in during if a.instance in leaving]
    if leaving and from_leaving:
        result.last_leaving_s = max(from_leaving)
    result.probe_cpu = probe.cpu_share
    result.quiet_start = quiet
    result.port_wait_s = port_wait
    result.ansible_cpu_s = children_after - children_before
    result.machine_busy = busy_share(cpu_before, cpu_after)
    check_replicas(end)
    return result, log


def wait_for_quiet(threshold: float, max_wait: float, sample: float = 3.0) -> bool:
    """Wait, at most max_wait seconds, until the machine's CPU was less than threshold busy over `sample`
    seconds: the machine is shared, and a run should not start in the middle of someone else's burst.
    Returns whether it was quiet (a run that starts after the wait anyway is counted as such)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_cpu()
        time.sleep(sample)
        share = busy_share(before, machine_cpu())
        if share is None or share < threshold:
            return True
        if time.monotonic() >= deadline:
            return False


def port_busy(port: int) -> bool:
    """Whether 127.0.0.1:port cannot be bound the way Docker's proxy binds it (SO_REUSEADDR, so only a
    listener or a connection using that local port blocks it, not TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_for_ports(ports: Sequence[int], max_wait: float) -> float:
    """Wait, at most max_wait seconds, until every port can be bound; returns the seconds waited."""
    began = time.monotonic()
    while any(port_busy(port) for port in ports) and time.monotonic() - began < max_wait:
        time.sleep(0.5)
    return time.monotonic() - began


def ephemeral_range() -> tuple[int, int] | None:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_event(event: dict, start: int, end: int, log: Path) -> None:
    """The run's scale event says backend went start -> end, and ok."""
    pools = {p.get("pool"): p for p in event.get("pools", [])}
    backend = pools.get(POOL, {})
    if event.get("result") != "ok" or (backend.get("current"), backend.get("target")) != (start, end):
        raise BenchError(f"scale run {start}->{end} recorded {event or 'nothing'} (log: {log})")


def check_replicas(expected: int) -> None:
    names = docker_names(
        "ps", "-a", "--filter", f"label={LABEL_STACK}={STACK}", "--filter", f"label={LABEL_POOL}={POOL}"
    )
    names = [name for name in names if not name.endswith("-warm")]  # warm replicas are not the pool's size
    if len(names) != expected:
        raise BenchError(f"expected {expected} {POOL} containers after the run, found {sorted(names)}")


# --- the profiled pass ----------------------------------------------------------------------------
_TASK_LINE = re.compile(r"^(?P<name>.+?) -+ +(?P<secs>\d+\.\d+)s$")


def parse_profile(output: str) -> list[TaskTime]:
    """The task lines of profile_tasks' TASKS RECAP (sort order none: in the order the tasks ran)."""
    _, found, recap = output.partition("TASKS RECAP")
    tasks: list[TaskTime] = []
    for line in recap.splitlines() if found else []:
        match = _TASK_LINE.match(line.strip())
        if match:
            tasks.append(TaskTime(len(tasks) + 1, match["name"].strip(), float(match["secs"])))
    return tasks


def slowest(tasks: Sequence[TaskTime], top: int = PROFILE_TOP) -> list[TaskTime]:
    return sorted(tasks, key=lambda t: t.seconds, reverse=True)[:top]


# --- the machine ----------------------------------------------------------------------------------


# --- summary --------------------------------------------------------------------------------------
def spread(values: Sequence[float | None]) -> str:
    """min / median / max of the values measured, and how many were not measured."""
    known = [v for v in values if v is not None]
    if not known:
        return "not seen" if values else "-"
    text = f"{min(known):.2f} / {statistics.median(known):.2f} / {max(known):.2f}"
    missing = len(values) - len(known)
    return text + (f" ({missing} not seen)" if missing else "")


def median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def by_op(results: Sequence[Measurement]) -> dict[str, list[Measurement]]:
    groups: dict[str, list[Measurement]] = {}
    for result in results:
        groups.setdefault(result.op, []).append(result)
    return groups


def summary_table(results: Sequence[Measurement]) -> str:
    rows = [
        "| operation | runs | wall time of `ansible-playbook` (s) | first new replica serving (s) "
        "| all new replicas serving (s) | probes failed / sent |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    for op, group in by_op(results).items():
        up = group[0].up
        rows.append(
            f"| {op} | {len(group)} | {spread([r.wall_s for r in group])} "
            f"| {spread([r.first_new_s for r in group]) if up else '-'} "
            f"| {spread([r.all_new_s for r in group]) if up else '-'} "
            f"| {sum(r.failed for r in group)} / {sum(r.probes for r in group)} |"
        )
    return "\n".join(rows)


def context_table(results: Sequence[Measurement]) -> str:
    """Medians of where the wall time was spent and how busy the machine was."""
    rows = [
        "| operation | inside the playbook (s) | outside the playbook (s) "
        "| CPU time of `ansible-playbook` and its children (s) | machine CPU busy, all cores |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for op, group in by_op(results).items():
        inside = median([r.playbook_s for r in group])
        outside = median([r.wall_s - r.playbook_s if r.playbook_s is not None else None for r in group])
        cpu = median([r.ansible_cpu_s for r in group])
        busy = median([r.machine_busy for r in group])
        rows.append(
            f"| {op} | {number(inside)} | {number(outside)} | {number(cpu)} "
            f"| {'-' if busy is None else f'{busy * 100:.0f} %'} |"
        )
    return "\n".join(rows)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def targets_table(results: Sequence[Measurement], pings: Sequence[float]) -> str:
    """Each target against the median of its measure, and +1's wall time against the no-op ping's."""
    groups = by_op(results)
    rows = ["| target | operation | measured | median | |", "| --- | --- | --- | --- | --- |"]
    for target, op, measure, limit in TARGETS:
        value = median([getattr(r, measure) for r in groups.get(op, [])])
        verdict = "not measured" if value is None else ("met" if value <= limit else "not met")
        shown = "-" if value is None else f"{value:.2f} s"
        rows.append(f"| {target} | {op} | {MEASURES[measure]} | {shown} | {verdict} |")
    wall, ping = median([r.wall_s for r in groups.get("+1 (3->4)", [])]), median(list(pings))
    if wall is not None and ping:
        verdict = "met" if wall <= PING_RATIO * ping else "not met"
        rows.append(
            f"| +1 wall time <= {PING_RATIO:g} x a no-op `ansible localhost -m ping` ({ping:.2f} s) "
            f"| +1 (3->4) | wall time / ping | {wall / ping:.2f} x | {verdict} |"
        )
    return "\n".join(rows)


def time_ping(runner: Runner) -> float:
    """Wall time of a no-op `ansible localhost -m ping`, with the project's configuration."""
    t0 = time.monotonic()
    subprocess.run(
        [str(BIN / "ansible"), "localhost", "-m", "ping"],
        cwd=ROOT,
        env=runner.env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return time.monotonic() - t0


def scale_down_lines(results: Sequence[Measurement]) -> list[str]:
    lines = []
    for op, group in by_op(results).items():
        if group[0].up:
            continue
        failed = sum(r.failed for r in group)
        errors = sorted({e for r in group for e in r.errors})
        item = (
            f"- {op}: {failed} of {sum(r.probes for r in group)} probe requests failed while the runs lasted"
            + (f" ({'; '.join(errors[:3])})" if errors else "")
            + f"; the last answer from a leaving replica came {spread([r.last_leaving_s for r in group])} s"
            " (min / median / max) after the command started."
        )
        lines.append(textwrap.fill(item, width=WRAP, subsequent_indent="  ", break_on_hyphens=False))
    return lines


def profile_section(profiles: Sequence[Profile]) -> list[str]:
    if not profiles:
        return []
    intro = (
        "One more run of each operation with `ANSIBLE_CALLBACKS_ENABLED=tenfold.stack.scale_events,"
        "ansible.posix.profile_tasks` (after the rounds above, not counted in them, the probe running as "
        f"before): the {PROFILE_TOP} slowest tasks of each run as profile_tasks times them (from a task's "
        "start to the next one's), with their place in the run, and the sum of all the others."
    )
    lines = [textwrap.fill(intro, width=WRAP, break_on_hyphens=False), ""]
    for profile in profiles:
        playbook = f"{profile.run.playbook_s:.2f} s" if profile.run.playbook_s is not None else "-"
        top = slowest(profile.tasks)
        rest = [t for t in profile.tasks if t not in top]
        by_role: dict[str, float] = {}
        for task in profile.tasks:
            role = task.name.split(" : ", 1)[0] if " : " in task.name else "no role"
            by_role[role] = by_role.get(role, 0.0) + task.seconds
        roles = ", ".join(
            f"{role} {secs:.2f} s" for role, secs in sorted(by_role.items(), key=lambda i: -i[1])
        )
        each = statistics.median(t.seconds for t in profile.tasks) if profile.tasks else 0.0
        run = profile.run
        busy = "" if run.machine_busy is None else f"; machine CPU busy {run.machine_busy * 100:.0f} %"
        head = (
            f"**{run.op}**: wall time {run.wall_s:.2f} s, of which {playbook} inside the playbook{busy}"
            f"{'' if run.quiet_start else ' (started on a busy machine)'}; {len(profile.tasks)} tasks, "
            f"median {each:.2f} s each; by role: {roles}."
        )
        lines += [
            textwrap.fill(head, width=WRAP, break_on_hyphens=False),
            "",
            "| task | # in the run | s |",
            "| --- | ---: | ---: |",
            *(f"| {t.name.replace('|', '/')} | {t.step} | {t.seconds:.2f} |" for t in top),
        ]
        if rest:
            lines.append(f"| the other {len(rest)} tasks together | | {sum(t.seconds for t in rest):.2f} |")
        lines.append("")
    return lines


def method(args: argparse.Namespace, results: Sequence[Measurement]) -> str:
    sequence = ", ".join(op_label(a, b) for a, b in ROUND)
    text = (
        f"**Method.** The script brings up a stack of its own (`{STACK}`: LB on "
        f"127.0.0.1:{HTTPS_PORT}, app ports {FRONTEND_PORT_BASE}+/{BACKEND_PORT_BASE}+, "
        "`nginx_lb_allowlist: [127.0.0.0/8]`) with `site.yml`, and removes it with `playbooks/down.yml` "
        f"at the end. Each of the {args.rounds} rounds scales the backend pool through {sequence}; each "
        "step is one `ansible-playbook scale.yml -e pool=backend -e replicas=N` (default inventory and "
        "callbacks, scale events to a temporary file). *Wall time* runs from just before the process is "
        f"started until it has exited. Meanwhile a probe thread sends about {args.rate:g} "
        "`GET /api/whoami` per second through the LB, each on a fresh TLS connection (no keep-alive), "
        "from 127.0.0.10-29. *Serving* is the time from the command's start until a new replica "
        f"(`{STACK}-backend-<i>`) answered a probe. Values are min / median / max over the runs."
    )
    return textwrap.fill(text, width=WRAP, break_on_hyphens=False)


def context(results: Sequence[Measurement], args: argparse.Namespace) -> str:
    text = (
        "Medians per operation. *Inside the playbook* is the duration the `tenfold.stack.scale_events` "
        "callback records (playbook start to stats); *outside* is the rest of the wall time: starting "
        "ansible-playbook, loading inventory and plugins, exiting. The CPU time is that of the "
        "`ansible-playbook` process and the children it waited for (workers, modules, the docker and nginx "
        "commands they ran; not the containers). *Machine CPU busy* is from /proc/stat over the run and "
        "counts everything on the machine: this benchmark, its containers, Docker, and any other work "
        "running at the time."
    )
    if args.quiet_below < 100:
        quiet = sum(r.quiet_start for r in results)
        text += (
            " The machine is shared, so each run started only once it had been less than "
            f"{args.quiet_below:g} % busy for 3 s (waiting at most {args.quiet_wait:g} s): {quiet} of "
            f"{len(results)} runs did."
        )
    cpu = median([r.probe_cpu for r in results])
    if cpu is not None:
        text += f" The probe thread used a median of {cpu * 100:.0f} % of one core."
    return textwrap.fill(text, width=WRAP, break_on_hyphens=False)


def port_note(runs: Sequence[Measurement]) -> str:
    """What the port guard did, when the replicas' ports lie in this machine's ephemeral port range."""
    span = ephemeral_range()
    ports = (BACKEND_PORT_BASE + 1, BACKEND_PORT_BASE + MAX_REPLICAS)
    if span is None or ports[1] < span[0] or ports[0] > span[1]:
        return ""
    ups = [r for r in runs if r.up]
    waited = [r.port_wait_s for r in ups if r.port_wait_s >= 0.5]
    retried = sum(r.port_retries for r in ups)
    text = (
        f"**Ports.** The new replicas' ports ({ports[0]}-{ports[1]}) lie in this machine's ephemeral port "
        f"range ({span[0]}-{span[1]}), so a connection from 127.0.0.1 (an LB's keep-alive connection to its "
        "upstreams, say) can hold one, and Docker then cannot publish it. Before each scale-up the script "
        "waits until the new replicas' ports can be bound (with SO_REUSEADDR, as Docker's proxy binds them); "
        "that wait is not part of the times. Of the "
        f"{len(ups)} scale-ups (profiled ones included), {len(waited)} waited"
        + (f" (at most {max(waited):.1f} s)" if waited else "")
        + f", and {retried} failed runs were started again because Docker could not bind a port all the same"
        " (such a run removes its new replicas and leaves the pool as it was, which the script checks; the "
        "failed runs are not in the tables)."
    )
    return textwrap.fill(text, width=WRAP, break_on_hyphens=False)


def render_section(
    results: Sequence[Measurement],
    profiles: Sequence[Profile],
    pings: Sequence[float],
    info: dict[str, str],
    args: argparse.Namespace,
) -> str:
    day = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Scaling",
        "",
        f"Written by `scripts/bench-scale.py` on {day}. Rerun it to replace this section:",
        "",
        "```bash",
        f". .venv/bin/activate && python scripts/bench-scale.py {args.command_line}",
        "```",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        method(args, results),
        "",
        port_note([*results, *(p.run for p in profiles)]),
        "",
        summary_table(results),
        "",
        'Targets (issue "Scale without reloading nginx"), against the medians measured above:',
        "",
        targets_table(results, pings),
        "",
        "Scale-down:",
        "",
        *scale_down_lines(results),
        "",
        "### Where the time goes",
        "",
        context(results, args),
        "",
        context_table(results),
        "",
        *profile_section(profiles),
    ]
    return "\n".join(lines).rstrip() + "\n"


# --- the stack ------------------------------------------------------------------------------------
def ports_in_use() -> list[int]:
    ports = [HTTP_PORT, HTTPS_PORT, STATUS_PORT]
    ports += [
        base + i for base in (FRONTEND_PORT_BASE, BACKEND_PORT_BASE) for i in range(1, MAX_REPLICAS + 1)
    ]
    taken = []
    for port in ports:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def teardown(runner: Runner) -> list[str]:
    """down.yml for the bench stack, with Ctrl-C ignored until it is done; returns what is left."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        print(f"removing stack {STACK} (playbooks/down.yml; Ctrl-C is ignored until it is done)", flush=True)
        try:
            runner.run("playbooks/down.yml", timeout=600)
        except BenchError as exc:
            print(f"teardown failed: {exc}", file=sys.stderr)
        return stack_leftovers(STACK)
    finally:
        signal.signal(signal.SIGINT, previous)


# --- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the scale sequence (default 3)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the Scaling section of the doc")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled pass")
    parser.add_argument("--rate", type=float, default=50.0, help="probe requests per second (default 50)")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="longest a scale run may take (default 300)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to keep probing after a scale-up for new replicas not seen yet (default 10)",
    )
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between runs (default 2)")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=25.0,
        help="start a run only once the machine's CPU is less than this %% busy over 3 s (default 25; "
        "100 starts at once)",
    )
    parser.add_argument(
        "--port-wait",
        type=float,
        default=120.0,
        help="longest wait before a scale-up until the new replicas' ports can be bound (default 120)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="longest wait for a quiet machine before a run starts anyway (default 300)",
    )
    args = parser.parse_args(argv)
    args.command_line = shlex.join(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1 or not 1 <= args.rate <= 200:
        parser.error("--rounds must be >= 1 and --rate between 1 and 200")
    return args


def measure_again_if_port_taken(
    runner: Runner, start: int, end: int, args: argparse.Namespace, profiled: bool = False
) -> tuple[Measurement, Path]:
    """measure(), run again (at most MAX_PORT_RETRIES times) when Docker could not bind a new replica's
    port. Such a run removed its new replicas and left the pool as it was, which is checked."""
    for attempt in range(MAX_PORT_RETRIES + 1):
        try:
            result, log = measure(runner, start, end, args, profiled)
        except PortTaken as exc:
            if attempt == MAX_PORT_RETRIES:
                raise
            check_replicas(start)
            print(f"{op_label(start, end)}: a port was taken, running it again ({str(exc).splitlines()[0]})")
            time.sleep(args.pause)
            continue
        result.port_retries = attempt
        return result, log
    raise AssertionError("unreachable")


def bench(runner: Runner, args: argparse.Namespace) -> tuple[list[Measurement], list[Profile], list[float]]:
    results: list[Measurement] = []
    pings: list[float] = []
    for number in range(1, args.rounds + 1):
        pings.append(time_ping(runner))
        print(f"round {number}: ansible localhost -m ping {pings[-1]:.2f} s", flush=True)
        for start, end in ROUND:
            time.sleep(args.pause)
            result, _ = measure_again_if_port_taken(runner, start, end, args)
            results.append(result)
            print(f"round {number}: {describe(result)}", flush=True)
    profiles: list[Profile] = []
    if not args.no_profile:
        for start, end in PROFILED:
            time.sleep(args.pause)
            result, log = measure_again_if_port_taken(runner, start, end, args, profiled=True)
            tasks = parse_profile(log.read_text(errors="replace"))
            profiles.append(Profile(result, tasks))
            print(f"profiled: {describe(result)}", flush=True)
    return results, profiles, pings


def describe(result: Measurement) -> str:
    text = f"{result.op:<11} wall {result.wall_s:6.2f} s"
    if result.up:
        first = "not seen" if result.first_new_s is None else f"{result.first_new_s:.2f} s"
        every = "not seen" if result.all_new_s is None else f"{result.all_new_s:.2f} s"
        text += f"  first new serving {first}  all new serving {every}"
    busy = "-" if result.machine_busy is None else f"{result.machine_busy * 100:.0f} %"
    quiet = "" if result.quiet_start else " (started on a busy machine)"
    return text + f"  probes failed {result.failed}/{result.probes}  machine busy {busy}{quiet}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix=f"{STACK}-"))
    runner = Runner(workdir, timeout=args.max_seconds)
    runner.write_vars()
    info = machine(WATCHED)
    ok = False
    left: list[str] = []
    results: list[Measurement] = []
    profiles: list[Profile] = []
    pings: list[float] = []
    try:
        print(f"removing leftovers of an earlier run of stack {STACK}, if any", flush=True)
        runner.run("playbooks/down.yml", timeout=600)
        taken = ports_in_use()
        if taken:
            raise BenchError(f"ports in use on 127.0.0.1, not starting stack {STACK}: {taken}")
        initial = [HTTP_PORT, HTTPS_PORT, STATUS_PORT]
        initial += [base + i for base in (FRONTEND_PORT_BASE, BACKEND_PORT_BASE) for i in (1, 2, 3)]
        wait_for_ports(initial, args.port_wait)  # a connection may hold one (see port_note)
        print(f"bringing up stack {STACK} (site.yml)", flush=True)
        runner.run("site.yml", timeout=1800)
        results, profiles, pings = bench(runner, args)
        ok = True
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        left = teardown(runner)
    if left:
        print(f"left behind after down.yml: {left}", file=sys.stderr)
    if not ok or left:
        print(f"playbook outputs kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    section = render_section(results, profiles, pings, info, args)
    print("\n" + section)
    if args.write_docs:
        write_section("bench-scale", section)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
