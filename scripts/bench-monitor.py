#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Benchmark the monitor on a stack of its own: its overhead (CPU, RSS) and how fast it reacts to a spike.

Brings up the stack `tenfoldmon` (LB on 127.0.0.1:47080/47443, status 47081, app ports 47100+/47200+) with
site.yml, and always removes it again with playbooks/down.yml, also on Ctrl-C or SIGTERM.

1. Overhead: `python -m tenfold_monitor run` (dry run, both pools, default window) for 60 s at an interval
   of 2 s and for 60 s at 1 s, under a light steady load (~20 req/s); psutil samples the monitor process's
   CPU time and RSS every second. The Docker engine's CPU (dockerd, containerd) is measured over the same
   windows and over one window without the monitor, since the monitor's stats calls cost the engine too.
2. Reaction, `--rounds` times: a monitor that acts (backend: target 15 req/s per replica, window 5 s,
   interval 1 s) watches a baseline load; then a spike of ~110 req/s of `GET /api/work?ms=50` starts. The
   script times the spike's start -> the monitor's first `up` decision (its line in the metrics log) -> the
   first answer of a new replica (`tenfoldmon-backend-4` or later) to a probe sending GET /api/whoami
   through the LB. Between rounds the backend goes back to 3 replicas with scale.yml.

Every load and wait is bounded. The load generator is the integration suite's (tests/integration/load.py).

    .venv/bin/python scripts/bench-monitor.py [--rounds 3] [--write-docs]

--write-docs rewrites the Monitor section of docs/benchmarks.md (between the bench-monitor markers).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
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
from pathlib import Path

import psutil
from benchlib import (
    BIN,
    DOC,
    MONITOR_DECISIONS,
    MONITOR_METRICS,
    ROOT,
    BenchError,
    ansible_playbook,
    busy_share,
    json_lines,
    machine,
    machine_cpu,
    monitor_settings,
    on_sigterm,
    write_section,
)
from benchlib import leftovers as stack_leftovers

sys.path.insert(0, str(ROOT / "tests" / "integration"))

from load import Load

STACK = "tenfoldmon"
# What the monitor runs: uncommitted changes there are named next to the commit in the doc.
WATCHED = ("monitor", "collections")
HTTP_PORT, HTTPS_PORT, STATUS_PORT = 47080, 47443, 47081
FRONTEND_PORT_BASE, BACKEND_PORT_BASE = 47100, 47200
MAX_REPLICAS = 10
BASE_REPLICAS = 3
STACK_VARS: dict[str, object] = {
    "tenfold_stack": STACK,
    "nginx_lb_listen_address": "127.0.0.1",
    "nginx_lb_http_port": HTTP_PORT,
    "nginx_lb_https_port": HTTPS_PORT,
    "nginx_lb_status_port": STATUS_PORT,
    "app_pools_frontend_port_base": FRONTEND_PORT_BASE,
    "app_pools_backend_port_base": BACKEND_PORT_BASE,
    # The load and the probe must never be rate- or connection-limited.
    "nginx_lb_allowlist": ["127.0.0.0/8"],
}
# Overhead: a light steady load on both pools.
LIGHT_PATHS = ["/api/whoami", "/whoami"]
LIGHT_SOURCES = [f"127.0.1.{i}" for i in range(10, 14)]
# Reaction: the integration suite's spike (tests/integration/test_monitor.py), a baseline, a probe.
SPIKE_PATH = "/api/work?ms=50"
SPIKE_SOURCES = [f"127.0.2.{i}" for i in range(20, 32)]
BASELINE_SOURCES = ["127.0.2.10", "127.0.2.11"]
PROBE_SOURCE = "127.0.0.40"
PROBE_PATH = "/api/whoami"
REACTION_POLICY = {
    "min_replicas": BASE_REPLICAS,
    "max_replicas": MAX_REPLICAS,
    "target_rps_per_replica": 15.0,
}
REACTION_WINDOW_S = 5.0
# Targets of the issue "The auto-scaler", section Benchmark.
TARGET_CPU_PERCENT = 2.0
TARGET_RSS_MB = 60.0
TARGET_DECISION_S = 5.0
SLICE_S = 10.0  # CPU % is also given per slice of this many seconds
POLL_S = 0.1  # how often the script reads the monitor's metrics log
MB = 1_000_000
WRAP = 110


# --- records --------------------------------------------------------------------------------------
@dataclass
class Overhead:
    interval_s: float
    seconds: float  # length of the measured window
    startup_cpu_s: float  # CPU time the monitor used before the window (imports, first collections)
    cpu_percent: float  # CPU time over the window / its length, 100 = one core
    slices: list[float]  # CPU % of one core per SLICE_S
    rss_mb: list[float]  # one sample a second
    lines: int  # metrics lines the monitor wrote during the window
    period_s: list[float]  # time between the collections of consecutive lines (their `at`)
    written_s: list[float]  # a collection's start (`at`) -> its line seen in the log (polled every POLL_S)
    engine_cpu_percent: float | None  # dockerd + containerd over the window, 100 = one core
    machine_busy: float | None  # share of all the machine's CPU that was busy
    load_rps: float

    @property
    def expected_lines(self) -> float:
        return self.seconds / self.interval_s


@dataclass
class Baseline:
    """The same light load for the same time, without a monitor."""

    seconds: float
    engine_cpu_percent: float | None
    machine_busy: float | None


@dataclass
class Reaction:
    round: int
    decision_s: float | None  # spike start -> the line with the first up decision is in the metrics log
    tick_s: float | None  # spike start -> the collection that decided (its `at`)
    serving_s: float | None  # spike start -> a new replica answered the probe through the LB
    desired: int | None
    first_new: str | None
    spike_sent: int = 0
    spike_failed: int = 0
    spike_rps: float = 0.0
    probe_sent: int = 0
    probe_failed: int = 0
    scale_run_s: float | None = None  # duration_s of the monitor's scale run (the scale-events callback)
    scale_start_s: float | None = None  # spike start -> that playbook's start, as its scale event records
    scale_end_s: float | None = None  # spike start -> its end
    machine_busy: float | None = None  # share of all the machine's CPU busy from the spike's start on
    notes: list[str] = field(default_factory=list)

    @property
    def decision_to_serving_s(self) -> float | None:
        if self.decision_s is None or self.serving_s is None:
            return None
        return self.serving_s - self.decision_s


# --- playbooks ------------------------------------------------------------------------------------
@dataclass
class Runner:
    """Runs the project's playbooks against the bench stack; keeps each run's output in workdir."""

    workdir: Path
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

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }

    def scale_command(self) -> list[str]:
        return [ansible_playbook(), "scale.yml", "-e", f"@{self.vars_file}"]

    def run(self, playbook: str, *args: str, timeout: float = 900) -> None:
        self.runs += 1
        log = self.workdir / f"{self.runs:03d}-{Path(playbook).stem}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [ansible_playbook(), playbook, "-e", f"@{self.vars_file}", *args],
                cwd=ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches this script, which stops the run itself
            )
            try:
                rc = proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                stop_group(proc)
                raise
        if rc != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise BenchError(
                f"ansible-playbook {playbook} {' '.join(args)} exited {rc} (log: {log}):\n{tail}"
            )

    def scale_backend(self, replicas: int) -> None:
        self.run("scale.yml", "-e", "pool=backend", "-e", f"replicas={replicas}", "-e", "trigger=bench")

    def events(self) -> list[dict]:
        return json_lines(self.events_log)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to the process group (ansible's own Ctrl-C), then SIGTERM, then SIGKILL; bounded."""
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


# --- the monitor ----------------------------------------------------------------------------------
class MonitorProcess:
    """`python -m tenfold_monitor run` for the bench stack, with its settings and logs in `workdir`."""

    def __init__(self, runner: Runner, workdir: Path, **settings: object) -> None:
        self.runner = runner
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "monitor.json"
        self.metrics = workdir / MONITOR_METRICS
        values = monitor_settings(
            STACK, STATUS_PORT, workdir, runner.workdir, runner.scale_command(), **settings
        )
        self.config.write_text(json.dumps(values, indent=2) + "\n")
        self.proc: subprocess.Popen | None = None
        self._offset = 0

    def start(self) -> psutil.Process:
        env = self.runner.env()
        with (self.workdir / "stderr.log").open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tenfold_monitor", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        return psutil.Process(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM: the monitor lets a scale run in progress finish (up to 60 s), then exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            stop_group(self.proc)

    def new_lines(self) -> list[tuple[float, dict]]:
        """Metrics lines written since the last call: (time this script read them, the line)."""
        if not self.metrics.exists():
            return []
        with self.metrics.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        now = time.time()
        found = []
        for raw in data[:end].splitlines():
            try:
                found.append((now, json.loads(raw)))
            except ValueError:
                continue
        return found

    def log_tail(self) -> str:
        path = self.workdir / MONITOR_DECISIONS
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextmanager
def running(monitor: MonitorProcess) -> Iterator[psutil.Process]:
    process = monitor.start()
    try:
        yield process
    finally:
        monitor.stop()


def process_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def engine_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("dockerd", "containerd")]


def engine_cpu(processes: Sequence[psutil.Process]) -> float | None:
    total = 0.0
    try:
        for process in processes:
            times = process.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        return None
    return total if processes else None


def per_core(cpu_s: float | None, seconds: float) -> float | None:
    return None if cpu_s is None else cpu_s / seconds * 100.0


# --- 1. overhead ----------------------------------------------------------------------------------
def wait_for_lines(monitor: MonitorProcess, count: int, timeout: float) -> list[dict]:
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        if time.monotonic() > deadline or (monitor.proc is not None and monitor.proc.poll() is not None):
            raise BenchError(
                f"the monitor wrote {len(lines)} metrics lines in {timeout:.0f} s:\n{monitor.log_tail()}"
            )
        lines += [line for _, line in monitor.new_lines()]
        time.sleep(0.2)
    return lines


def measure_baseline(load: Load, seconds: float) -> Baseline:
    engine = engine_processes()
    cpu0, busy0 = engine_cpu(engine), machine_cpu()
    time.sleep(seconds)
    cpu1, busy1 = engine_cpu(engine), machine_cpu()
    spent = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return Baseline(seconds, per_core(spent, seconds), busy_share(busy0, busy1))


def measure_overhead(
    runner: Runner, workdir: Path, load: Load, interval: float, args: argparse.Namespace
) -> Overhead:
    monitor = MonitorProcess(runner, workdir / f"overhead-{interval:g}s", interval_s=interval, dry_run=True)
    with running(monitor) as process:
        # Warm-up: imports, the first collections, the traffic window filling (10 s by default).
        wait_for_lines(monitor, 2, timeout=60)
        time.sleep(args.warmup)
        monitor.new_lines()
        engine = engine_processes()
        startup = process_cpu(process)
        began, cpu0 = time.monotonic(), startup
        engine0, busy0, sent0 = engine_cpu(engine), machine_cpu(), load.tally.sent
        rss: list[float] = []
        slices: list[float] = []
        stamps: list[tuple[float, float]] = []  # (seen in the log, the line's `at`)
        slice_at, slice_cpu, rss_at = began, cpu0, began
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
        seconds = time.monotonic() - began
        cpu1 = process_cpu(process)
        engine1, busy1, sent1 = engine_cpu(engine), machine_cpu(), load.tally.sent
        rss.append(process.memory_info().rss / MB)
        stamps += [(seen, line["at"]) for seen, line in monitor.new_lines()]
        if monitor.proc is not None and monitor.proc.poll() is not None:
            raise BenchError(f"the monitor exited during the measurement:\n{monitor.log_tail()}")
    spent = None if engine0 is None or engine1 is None else engine1 - engine0
    return Overhead(
        interval_s=interval,
        seconds=seconds,
        startup_cpu_s=startup,
        cpu_percent=(cpu1 - cpu0) / seconds * 100.0,
        slices=slices,
        rss_mb=rss,
        lines=len(stamps),
        period_s=[b - a for (_, a), (_, b) in itertools.pairwise(stamps)],
        written_s=[seen - at for seen, at in stamps],
        engine_cpu_percent=per_core(spent, seconds),
        machine_busy=busy_share(busy0, busy1),
        load_rps=(sent1 - sent0) / seconds,
    )


def overhead_phase(
    runner: Runner, workdir: Path, args: argparse.Namespace
) -> tuple[Baseline, list[Overhead], dict]:
    total = args.window * 3 + (args.warmup + 30) * 2 + 60
    load = Load(
        HTTPS_PORT, LIGHT_PATHS, rate=args.light_rate, workers=2, sources=LIGHT_SOURCES, max_seconds=total
    )
    with load:
        time.sleep(3)
        baseline = measure_baseline(load, args.window)
        print(
            f"overhead: no monitor: Docker engine {number(baseline.engine_cpu_percent)} % of a core",
            flush=True,
        )
        results = []
        for interval in (2.0, 1.0):
            result = measure_overhead(runner, workdir, load, interval, args)
            results.append(result)
            print(f"overhead: {describe_overhead(result)}", flush=True)
    tally = {"sent": load.tally.sent, "failed": load.tally.failed, "failures": dict(load.tally.failures)}
    return baseline, results, tally


def describe_overhead(o: Overhead) -> str:
    return (
        f"interval {o.interval_s:g} s: CPU {o.cpu_percent:.2f} % of a core (slices {spread(o.slices)}), "
        f"RSS peak {max(o.rss_mb):.1f} MB mean {statistics.fmean(o.rss_mb):.1f} MB, "
        f"{o.lines} lines in {o.seconds:.0f} s (one per {number(median(o.period_s))} s, written "
        f"{number(median(o.written_s))} s after the collection began), "
        f"Docker engine {number(o.engine_cpu_percent)} %"
    )


# --- 2. reaction ----------------------------------------------------------------------------------
class Probe(threading.Thread):
    """GET /api/whoami through the LB at a steady rate on one keep-alive connection; notes when each
    backend instance first answered (wall clock). Stops when told, or by itself after max_seconds."""

    def __init__(self, rate: float, max_seconds: float) -> None:
        super().__init__(daemon=True)
        self.interval = 1.0 / rate
        self.deadline = time.monotonic() + max_seconds
        self.first_seen: dict[str, float] = {}
        self.sent = 0
        self.failed = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", HTTPS_PORT, timeout=5, source_address=(PROBE_SOURCE, 0), context=self.context
        )

    def run(self) -> None:
        conn: http.client.HTTPSConnection | None = None
        due = time.monotonic()
        while not self.halt.is_set() and time.monotonic() < self.deadline:
            instance = None
            try:
                conn = conn or self.connect()
                conn.request("GET", PROBE_PATH)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    instance = str(json.loads(body).get("instance"))
            except (OSError, ValueError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            answered = time.time()
            with self.lock:
                self.sent += 1
                if instance is None:
                    self.failed += 1
                elif instance not in self.first_seen:
                    self.first_seen[instance] = answered
            due = max(due + self.interval, time.monotonic())
            self.halt.wait(max(0.0, due - time.monotonic()))
        if conn is not None:
            conn.close()

    def first_new(self, after: int) -> tuple[str, float] | None:
        """The first answer of a replica numbered above `after`: (instance, wall-clock time)."""
        with self.lock:
            new = [(at, name) for name, at in self.first_seen.items() if replica_number(name) > after]
        if not new:
            return None
        at, name = min(new)
        return name, at

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def replica_number(instance: str) -> int:
    match = re.fullmatch(rf"{STACK}-backend-(\d+)", instance)
    return int(match.group(1)) if match else 0


@contextmanager
def probing(rate: float, max_seconds: float) -> Iterator[Probe]:
    probe = Probe(rate, max_seconds)
    probe.start()
    try:
        deadline = time.monotonic() + 15
        while not probe.first_seen:
            if time.monotonic() > deadline or not probe.is_alive():
                raise BenchError(f"the load balancer on 127.0.0.1:{HTTPS_PORT} does not answer the probe")
            time.sleep(0.05)
        yield probe
    finally:
        probe.stop()


def backend_decision(line: dict) -> dict | None:
    for decision in line.get("decisions", []):
        if decision.get("pool") == "backend":
            return decision
    return None


def wait_until_steady(monitor: MonitorProcess, window_s: float, timeout: float) -> None:
    """Until the monitor has decided `hold` on full windows of the baseline for `window_s` seconds."""
    deadline = time.monotonic() + timeout
    steady_since: float | None = None
    while time.monotonic() < deadline:
        for _, line in monitor.new_lines():
            decision = backend_decision(line)
            backend = line.get("pools", {}).get("backend", {})
            holding = (
                decision is not None and decision.get("action") == "hold" and backend.get("rps") is not None
            )
            if not holding:
                steady_since = None
            elif steady_since is None:
                steady_since = line["at"]
            elif line["at"] - steady_since >= window_s:
                return
        if monitor.proc is not None and monitor.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise BenchError(f"the monitor did not settle on the baseline in {timeout:.0f} s:\n{monitor.log_tail()}")


def measure_reaction(runner: Runner, workdir: Path, number_: int, args: argparse.Namespace) -> Reaction:
    runner.scale_backend(BASE_REPLICAS)
    events_before = len(runner.events())
    monitor = MonitorProcess(
        runner,
        workdir / f"reaction-{number_}",
        interval_s=1.0,
        window_s=REACTION_WINDOW_S,
        pools={"backend": REACTION_POLICY},
    )
    budget = args.spike_seconds + 120
    baseline = Load(
        HTTPS_PORT,
        [SPIKE_PATH],
        rate=args.baseline_rate,
        workers=2,
        sources=BASELINE_SOURCES,
        max_seconds=budget,
    )
    result = Reaction(number_, None, None, None, None, None)
    with baseline, probing(args.probe_rate, budget) as probe, running(monitor):
        wait_until_steady(monitor, REACTION_WINDOW_S + 1, timeout=60)
        spike = Load(
            HTTPS_PORT,
            [SPIKE_PATH],
            rate=args.spike_rate,
            workers=max(1, round(args.spike_rate / 10)),
            sources=SPIKE_SOURCES,
            max_seconds=args.spike_seconds,
        )
        with spike:
            start, busy0 = time.time(), machine_cpu()
            deadline = time.monotonic() + args.spike_seconds
            while time.monotonic() < deadline:
                for seen, line in monitor.new_lines():
                    decision = backend_decision(line)
                    if result.decision_s is None and decision and decision.get("action") == "up":
                        result.decision_s = seen - start
                        result.tick_s = line["at"] - start
                        result.desired = decision.get("desired")
                new = probe.first_new(BASE_REPLICAS)
                if new and result.serving_s is None:
                    result.first_new, result.serving_s = new[0], new[1] - start
                if result.serving_s is not None and result.decision_s is not None:
                    break
                time.sleep(POLL_S)
            result.machine_busy = busy_share(busy0, machine_cpu())
        result.spike_sent, result.spike_failed, result.spike_rps = (
            spike.tally.sent,
            spike.tally.failed,
            spike.rate,
        )
        if spike.tally.failed:
            result.notes.append(f"spike failures: {dict(spike.tally.failures)}")
        if result.decision_s is None:
            result.notes.append(f"no up decision in {args.spike_seconds:g} s")
        if result.serving_s is None:
            result.notes.append(f"no new replica answered in {args.spike_seconds:g} s")
    # The monitor has stopped; a scale run it started has finished (it waits for it).
    result.probe_sent, result.probe_failed = probe.sent, probe.failed
    runs = [e for e in runner.events()[events_before:] if e.get("trigger") == "monitor"]
    if runs:
        result.scale_run_s = runs[0].get("duration_s")
        result.scale_start_s = since(runs[0].get("start"), start)
        result.scale_end_s = since(runs[0].get("end"), start)
        if runs[0].get("result") != "ok":
            result.notes.append(f"the monitor's scale run: {runs[0].get('result')}")
    return result


def since(stamp: object, start: float) -> float | None:
    """Seconds from `start` (epoch) to an ISO 8601 time of a scale event; None when it is not one."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp() - start
    except ValueError:
        return None


def describe_reaction(r: Reaction) -> str:
    return (
        f"round {r.round}: decision {number(r.decision_s)} s (tick {number(r.tick_s)} s), "
        f"new replica serving {number(r.serving_s)} s ({r.first_new or '-'}), desired {r.desired}, "
        f"scale run {number(r.scale_start_s)} -> {number(r.scale_end_s)} s, "
        f"spike {r.spike_rps:.0f} req/s, {r.spike_failed}/{r.spike_sent} failed"
        + (f"; {'; '.join(r.notes)}" if r.notes else "")
    )


# --- the machine ----------------------------------------------------------------------------------


# --- the doc --------------------------------------------------------------------------------------
def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def spread(values: Sequence[float | None], digits: int = 2) -> str:
    """min / median / max of the values measured, and how many were not."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    text = " / ".join(f"{v:.{digits}f}" for v in (min(known), statistics.median(known), max(known)))
    missing = len(values) - len(known)
    return text + (f" ({missing} not measured)" if missing else "")


def paragraph(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=WRAP, break_on_hyphens=False)


def overhead_table(baseline: Baseline, results: Sequence[Overhead]) -> list[str]:
    rows = [
        "| interval | CPU, % of one core (whole window) | CPU per 10 s, min / median / max | "
        "RSS MB, min / median / max | RSS MB, mean | metrics lines / expected | time between collections, "
        "median (s) | collection -> its line in the log, min / median / max (s) "
        "| Docker engine CPU, % of one core | machine CPU busy |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
        f"| no monitor | - | - | - | - | - | - | - | {number(baseline.engine_cpu_percent)} "
        f"| {share(baseline.machine_busy)} |",
    ]
    for o in results:
        rows.append(
            f"| {o.interval_s:g} s | {o.cpu_percent:.2f} | {spread(o.slices)} | {spread(o.rss_mb, 1)} "
            f"| {statistics.fmean(o.rss_mb):.1f} | {o.lines} / {o.expected_lines:.0f} "
            f"| {number(median(o.period_s))} | {spread(o.written_s)} "
            f"| {number(o.engine_cpu_percent)} | {share(o.machine_busy)} |"
        )
    return rows


def reaction_table(results: Sequence[Reaction]) -> list[str]:
    rows = [
        "| round | first `up` decision in the log (s) | its collection began (s) | first answer of a new "
        "replica (s) | decision -> serving (s) | desired | monitor's scale run: playbook start / end (s) "
        "| spike req/s | spike failed / sent | machine CPU busy |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        rows.append(
            f"| {r.round} | {number(r.decision_s)} | {number(r.tick_s)} | {number(r.serving_s)} "
            f"| {number(r.decision_to_serving_s)} | {r.desired if r.desired is not None else '-'} "
            f"| {number(r.scale_start_s)} / {number(r.scale_end_s)} | {r.spike_rps:.0f} "
            f"| {r.spike_failed} / {r.spike_sent} | {share(r.machine_busy)} |"
        )
    rows.append(
        f"| min / median / max | {spread([r.decision_s for r in results])} "
        f"| {spread([r.tick_s for r in results])} | {spread([r.serving_s for r in results])} "
        f"| {spread([r.decision_to_serving_s for r in results])} "
        "| | | | | |"
    )
    return rows


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def targets_table(results: Sequence[Overhead], reactions: Sequence[Reaction]) -> list[str]:
    rows = ["| target | measured | |", "| --- | --- | --- |"]
    for o in results:
        period = median(o.period_s)
        kept = period is not None and period <= o.interval_s * 1.2
        caveat = (
            ""
            if kept
            else f"; the monitor collected once per {number(period)} s, not every {o.interval_s:g} s"
        )
        rows.append(
            f"| CPU <= {TARGET_CPU_PERCENT:g} % of a core at {o.interval_s:g} s | {o.cpu_percent:.2f} % "
            f"(whole window{caveat}) | {verdict(o.cpu_percent <= TARGET_CPU_PERCENT)}"
            f"{'' if kept else f' at one collection per {number(period)} s'} |"
        )
    for o in results:
        peak = max(o.rss_mb)
        rows.append(
            f"| RSS <= {TARGET_RSS_MB:g} MB at {o.interval_s:g} s | peak {peak:.1f} MB | "
            f"{verdict(peak <= TARGET_RSS_MB)} |"
        )
    decisions = [r.decision_s for r in reactions]
    within = sum(1 for d in decisions if d is not None and d <= TARGET_DECISION_S)
    known = [d for d in decisions if d is not None]
    shown = f"worst {max(known):.2f} s, median {statistics.median(known):.2f} s" if known else "-"
    ok = None if not reactions else within == len(reactions)
    rows.append(
        f"| decision <= {TARGET_DECISION_S:g} s after the spike starts | {shown}; {within} of "
        f"{len(reactions)} rounds within | {verdict(ok)} |"
    )
    return rows


def render_section(
    info: dict[str, str],
    baseline: Baseline,
    overheads: Sequence[Overhead],
    reactions: Sequence[Reaction],
    light: dict,
    args: argparse.Namespace,
) -> str:
    day = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    method_overhead = f"""
        **Overhead.** The script brings up a stack of its own (`{STACK}`: LB on 127.0.0.1:{HTTPS_PORT},
        app ports {FRONTEND_PORT_BASE}+/{BACKEND_PORT_BASE}+, `nginx_lb_allowlist: [127.0.0.0/8]`, 3
        frontend and 3 backend replicas) with `site.yml`, and removes it with `playbooks/down.yml` at
        the end. `python -m tenfold_monitor run` watches it in dry run with the default settings (both
        pools, 10 s traffic window), at an interval of 2 s, then of 1 s, while a steady load of
        {args.light_rate:g} req/s (`GET /api/whoami` and `/whoami`, keep-alive) runs through the LB.
        After {args.warmup:g} s of warm-up, psutil reads the monitor process's CPU time (user + system)
        and RSS every second for {args.window:g} s, and its metrics log every {POLL_S:g} s: each line's
        `at` is when its collection began, and the script notes when the line appeared (the policy has
        decided, and acted, by then). CPU is given as a share of one core over the whole window and per
        10 s slice; RSS in MB (10^6 bytes). The Docker engine answers the monitor's stats calls, so the
        CPU time of `dockerd` and `containerd` is given too, also over a window of the same load without
        a monitor. *Machine CPU busy* (all cores, from /proc/stat) counts everything on this shared
        machine."""
    startup = ", ".join(f"{o.startup_cpu_s:.2f} s at {o.interval_s:g} s" for o in overheads)
    method_reaction = f"""
        **Reaction.** For each of {len(reactions)} rounds the backend is set to 3 replicas with
        `scale.yml`, then a monitor that acts starts (interval 1 s, window 5 s, backend only: min 3, max
        10, `target_rps_per_replica: 15`, the policy's other defaults; scale runs through `scale.yml`).
        A baseline of {args.baseline_rate:g} req/s of `GET {SPIKE_PATH}` and a probe of
        {args.probe_rate:g} req/s of `GET {PROBE_PATH}` run until the monitor has held on full windows
        for 6 s. Then the spike starts: {args.spike_rate:g} req/s of `GET {SPIKE_PATH}` from
        127.0.2.20-31 (the integration suite's load generator). Times are from the spike's start to: the
        monitor's metrics log having the line with its first backend `up` decision (the script polls it
        every {POLL_S:g} s; the scale run has been started by then), the start of the collection that
        decided (the line's `at`), and the first answer of a new replica (`{STACK}-backend-4` or later)
        to the probe. The monitor's scale run is timed by its scale event (`start`, `end`: the
        playbook's own start and end, after ansible-playbook has loaded). *Machine CPU busy* is over all
        cores from the spike's start until both were seen."""
    lines = [
        "## Monitor",
        "",
        f"Written by `scripts/bench-monitor.py` on {day}. Rerun it to replace this section:",
        "",
        "```bash",
        f". .venv/bin/activate && python scripts/bench-monitor.py {args.command_line}".rstrip(),
        "```",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        paragraph(method_overhead),
        "",
        *overhead_table(baseline, overheads),
        "",
        paragraph(
            f"CPU time the monitor used before the window (start-up, imports, first collections): {startup}. "
            f"The light load sent {light['sent']} requests, {light['failed']} failed."
        ),
        "",
        paragraph(method_reaction),
        "",
        *reaction_table(reactions),
        "",
    ]
    notes = [f"- round {r.round}: {'; '.join(r.notes)}" for r in reactions if r.notes]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += [
        'Targets (issue "The auto-scaler", Benchmark):',
        "",
        *targets_table(overheads, reactions),
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
        except (BenchError, subprocess.TimeoutExpired) as exc:
            print(f"teardown failed: {exc}", file=sys.stderr)
        return stack_leftovers(STACK)
    finally:
        signal.signal(signal.SIGINT, previous)


# --- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="spike rounds (default 3)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the Monitor section of the doc")
    parser.add_argument(
        "--window", type=float, default=60.0, help="seconds measured per interval (default 60)"
    )
    parser.add_argument("--warmup", type=float, default=12.0, help="seconds before measuring (default 12)")
    parser.add_argument(
        "--light-rate", type=float, default=20.0, help="req/s during the overhead (default 20)"
    )
    parser.add_argument(
        "--baseline-rate", type=float, default=10.0, help="req/s before the spike (default 10)"
    )
    parser.add_argument("--spike-rate", type=float, default=110.0, help="req/s of the spike (default 110)")
    parser.add_argument("--probe-rate", type=float, default=10.0, help="probe req/s (default 10)")
    parser.add_argument(
        "--spike-seconds", type=float, default=90.0, help="longest a spike lasts (default 90)"
    )
    args = parser.parse_args(argv)
    args.command_line = shlex.join(sys.argv[1:] if argv is None else argv)
    rates = (args.light_rate, args.baseline_rate, args.spike_rate, args.probe_rate)
    if args.rounds < 0 or not all(0 < r <= 200 for r in rates) or not 10 <= args.window <= 600:
        parser.error("--rounds must be >= 0, rates in (0, 200] req/s, --window in [10, 600] s")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix=f"{STACK}-"))
    runner = Runner(workdir)
    runner.write_vars()
    info = machine(WATCHED, {"psutil": psutil.__version__})
    ok = False
    left: list[str] = []
    baseline: Baseline | None = None
    overheads: list[Overhead] = []
    reactions: list[Reaction] = []
    light: dict = {}
    try:
        print(f"removing leftovers of an earlier run of stack {STACK}, if any", flush=True)
        runner.run("playbooks/down.yml", timeout=600)
        taken = ports_in_use()
        if taken:
            raise BenchError(f"ports in use on 127.0.0.1, not starting stack {STACK}: {taken}")
        print(f"bringing up stack {STACK} (site.yml)", flush=True)
        runner.run("site.yml", timeout=1800)
        baseline, overheads, light = overhead_phase(runner, workdir, args)
        for number_ in range(1, args.rounds + 1):
            reaction = measure_reaction(runner, workdir, number_, args)
            reactions.append(reaction)
            print(f"reaction: {describe_reaction(reaction)}", flush=True)
        ok = True
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        left = teardown(runner)
    if left:
        print(f"left behind after down.yml: {left}", file=sys.stderr)
    if not ok or left or baseline is None:
        print(f"outputs kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    section = render_section(info, baseline, overheads, reactions, light, args)
    print("\n" + section)
    if args.write_docs:
        write_section("bench-monitor", section)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
