# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The monitor's loop: collect, decide per pool with the pure policy, act through scale.yml, record.

Collection never waits for a scale run: the actuator runs ansible-playbook in the background, one run at a
time, and the loop keeps collecting and logging while it runs.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ansible_collections.tenfold.stack.plugins.module_utils import lock as tenfold_lock
from ansible_collections.tenfold.stack.plugins.module_utils import policy
from ansible_collections.tenfold.stack.plugins.module_utils import state as tenfold_state
from ansible_collections.tenfold.stack.plugins.module_utils.lb import Client

from tenfold_monitor import events
from tenfold_monitor.actuator import Actuator
from tenfold_monitor.collect import Collector, PoolSnapshot, Snapshot
from tenfold_monitor.engines import LOCAL, EngineHost, Engines, use_ssh_options
from tenfold_monitor.lost import drain_lost, host_address
from tenfold_monitor.prometheus import Exporter
from tenfold_monitor.promote import FastPath

LOG = logging.getLogger("tenfold.monitor")
# A daily report still running after this long is stopped (it reads at most the metrics log's backups).
REPORT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class SettingsProblem:
    """What is wrong with the monitor's settings, and which settings (dotted: pools.backend.tolerance)."""

    settings: tuple[str, ...]
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"settings": list(self.settings), "message": self.message}


class SettingsError(ValueError):
    def __init__(self, problems: list[SettingsProblem]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"{', '.join(p.settings)}: {p.message}" if p.settings else p.message for p in problems)
        )


@dataclass
class Settings:
    """Everything the monitor needs; the monitor role renders it as JSON from the inventory."""

    stack: str = "tenfold"
    project_dir: str = "."
    interval_s: float = 1.0
    dry_run: bool = False
    lb_status_url: str = "http://127.0.0.1:8081/status"  # the LB's members and counters
    stub_status_url: str = "http://127.0.0.1:8081/nginx_status"  # the LB's connections
    # The stack's shared scale state (the scale lock, the scale events the cooldown reads): on the state host,
    # where the monitor runs. "" is the stack's default, /var/lib/tenfold/<stack>/scale (tenfold_state_dir).
    state_dir: str = ""
    metrics_log: str = "logs/performance-metrics.jsonl"  # one JSON line per tick, decisions included
    decisions_log: str = "logs/monitor-decisions.jsonl"  # the monitor's log, one JSON object per line
    scale_log: str = "logs/monitor-scale-runs.log"
    state_file: str = "logs/monitor-state.json"
    # A line is about 1.3 kB with two pools: 5 x 64 MiB hold almost 3 days at 1 s and 6 at 2 s, so the
    # daily report always finds the whole of yesterday.
    metrics_max_bytes: int = 64 * 1024 * 1024
    metrics_backups: int = 4
    window_s: float = 10.0
    panic_window_s: float = 3.0  # the short window beside it (the policy's panic rule)
    # Promote a pool's warm replicas in the monitor's own process (lock, health check, LB members, event),
    # then let scale.yml start the rest; false: every scale-up goes through scale.yml.
    fast_path: bool = True
    scale_command: list[str] = field(default_factory=lambda: [".venv/bin/ansible-playbook", "scale.yml"])
    prometheus_port: int = 0  # 0: no Prometheus endpoint
    # The Docker hosts whose replicas the monitor reads ({name, url}; url "" = the local engine, or
    # ssh://user@address), and the options ssh needs to reach them (key, known hosts, timeouts).
    docker_hosts: list[dict[str, str]] = field(default_factory=list)
    ssh_options: list[str] = field(default_factory=list)
    pools: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"frontend": {}, "backend": {}}
    )  # pool -> PolicyConfig fields

    @classmethod
    def load(cls, path: Path | None, **overrides: Any) -> Settings:
        """The settings in `path` (JSON, "-": stdin) with `overrides`; a SettingsError names each bad one."""
        values: dict[str, Any] = {}
        try:
            if path == Path("-"):
                values = json.load(sys.stdin)
            elif path:
                values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SettingsError([SettingsProblem((), f"{path} is not JSON: {exc}")]) from exc
        if not isinstance(values, dict):
            raise SettingsError([SettingsProblem((), f"the settings must be a JSON object, got {values!r}")])
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise SettingsError(
                [SettingsProblem(tuple(unknown), f"unknown monitor settings: {', '.join(unknown)}")]
            )
        settings = cls(**values)
        problems = settings.problems()
        if problems:
            raise SettingsError(problems)
        return settings

    def problems(self) -> list[SettingsProblem]:
        """Everything wrong with these settings, each naming its settings (pools.<pool>.<policy field>)."""
        problems: list[SettingsProblem] = []

        def check(names: tuple[str, ...], test: Callable[[], object]) -> None:
            try:
                test()
            except (ValueError, TypeError) as exc:
                problems.append(SettingsProblem(names, str(exc)))

        check(("interval_s",), self._check_interval)
        check(("window_s", "panic_window_s"), self._check_windows)
        check(("docker_hosts",), self.engine_hosts)  # naming the bad host
        check(("ssh_options",), self._check_ssh_options)
        check(("state_dir",), self.state)  # a relative or malformed state_dir
        if not isinstance(self.pools, dict):
            problems.append(
                SettingsProblem(("pools",), f"pools must map pools to policies, got {self.pools!r}")
            )
            return problems
        for pool, config in self.pools.items():
            if not pool or not isinstance(config, dict):
                problems.append(
                    SettingsProblem(
                        (f"pools.{pool}",), f"pool {pool!r} needs a name and a policy, got {config!r}"
                    )
                )
                continue
            try:
                policy.PolicyConfig.from_mapping(config)
            except policy.PolicyError as exc:
                problems += [
                    SettingsProblem(tuple(f"pools.{pool}.{name}" for name in problem.fields), problem.message)
                    for problem in exc.problems
                ]
            except TypeError as exc:
                problems.append(SettingsProblem((f"pools.{pool}",), str(exc)))
        return problems

    def _check_interval(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    def _check_windows(self) -> None:
        if not 0 < self.panic_window_s <= self.window_s:
            raise ValueError(
                f"panic_window_s must be above 0 and at most window_s ({self.window_s}),"
                f" got {self.panic_window_s}"
            )

    def _check_ssh_options(self) -> None:
        if not isinstance(self.ssh_options, list) or not all(isinstance(o, str) for o in self.ssh_options):
            raise ValueError(f"ssh_options must be strings, got {self.ssh_options!r}")

    def engine_hosts(self) -> list[EngineHost]:
        hosts = [EngineHost.from_mapping(raw) for raw in self.docker_hosts] or [EngineHost(LOCAL)]
        names = [host.name for host in hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"docker_hosts names a host twice: {', '.join(names)}")
        return hosts

    def path(self, value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else Path(self.project_dir) / candidate

    def state(self) -> str:
        """The stack's state directory, checked as the tenfold.stack.state lookup checks it."""
        return tenfold_state.check_dir(self.state_dir or tenfold_state.default_dir(self.stack))

    def events_log(self) -> Path:
        return Path(tenfold_state.events_path(self.state()))

    def scale_lock(self) -> Path:
        return Path(tenfold_state.lock_path(self.state()))


def pool_metrics(snapshot: Snapshot, pool: PoolSnapshot) -> policy.PoolMetrics | None:
    """The policy's view of a pool; None when the pool's size itself is unknown (Docker unreachable)."""
    if pool.replicas is None or pool.serving is None:
        return None
    return policy.PoolMetrics(
        at=snapshot.at,
        replicas=pool.replicas,
        serving=pool.serving,
        rps=pool.rps,
        cpu_percent=pool.cpu_percent,
        memory_percent=pool.memory_percent,
        error_rate=pool.error_rate,
        p95_s=pool.p95_s,
        panic_rps=pool.panic_rps,
    )


class Monitor:
    """`writes=False` (`tenfold_monitor once`): decide and log to stderr, but write no file and serve no
    metrics, so a running monitor stays the only writer of its metrics log and state file."""

    def __init__(
        self, settings: Settings, collector: Collector | None = None, *, writes: bool = True
    ) -> None:
        self.settings = settings
        self.writes = writes
        stack = settings.stack
        # scale runs keep the environment as it was: Ansible's ssh takes its options from the inventory
        run_env = dict(os.environ)
        use_ssh_options(settings.ssh_options)
        self.engines = Engines(settings.engine_hosts())
        self.collector = collector or Collector(
            stack,
            settings.lb_status_url,
            settings.stub_status_url,
            engines=self.engines,
            pools=tuple(settings.pools),
            window_s=settings.window_s,
            panic_window_s=settings.panic_window_s,
        )
        self.policies = {
            name: policy.Policy(policy.PolicyConfig.from_mapping(config))
            for name, config in settings.pools.items()
        }
        command = [*settings.scale_command]
        self.actuator = Actuator(
            command, cwd=Path(settings.project_dir), log_path=settings.path(settings.scale_log), env=run_env
        )
        self.metrics = (
            _rotating_logger(
                "tenfold.monitor.metrics",
                settings.path(settings.metrics_log),
                settings.metrics_max_bytes,
                settings.metrics_backups,
            )
            if writes
            else None
        )
        self.fast_path = None
        if settings.fast_path and not settings.dry_run:
            self.fast_path = FastPath(
                stack,
                self.engines,
                settings.lb_status_url.rsplit("/", 1)[0],
                settings.scale_lock(),
                settings.events_log(),
            )
        self.last_decisions: dict[str, dict] = {}
        self.unlisted_ticks: dict[str, int] = {}  # pool -> ticks in a row with replicas outside the LB
        # Docker hosts lost at the last reading: scale runs leave them out
        self.unreachable: list[str] = []
        self.lb = Client(settings.lb_status_url.rsplit("/", 1)[0])
        self.started = time.time()
        self.stopping = False
        self.exporter = Exporter(stack, settings.pools, settings.prometheus_port if writes else 0)
        self.last_warnings: list[str] = []
        self.report_day = _utc_day(self.started)
        self.report_run: tuple[subprocess.Popen, float, Any] | None = None  # (process, started, stderr)

    def tick(self, now: float | None = None) -> list[policy.Decision]:
        now = time.time() if now is None else now
        snapshot = self.collector.collect(now)
        self.unreachable = snapshot.unreachable_hosts
        for warning in snapshot.warnings:
            LOG.warning("%s", warning)
        self.drain_lost_hosts()
        finished = self.actuator.poll()
        if finished:
            outcome = "ok" if finished.returncode == 0 else f"failed (exit {finished.returncode})"
            LOG.info(
                "scale run %s -> %d finished %s after %.1fs (see %s)",
                finished.pool,
                finished.replicas,
                outcome,
                finished.seconds,
                finished.log_path,
            )
            self.exporter.scale_run_finished(finished.pool, finished.returncode == 0)
        scaled_at = events.last_scaled(self.settings.events_log(), self.settings.stack)
        decisions = []
        for name, pool_policy in self.policies.items():
            pool = snapshot.pools.get(name)
            metrics = pool_metrics(snapshot, pool) if pool else None
            decision = pool_policy.decide(name, now, metrics, scaled_at.get(name))
            decisions.append(decision)
            self.act(decision, pool)
            self.readmit(decision, pool)
        self.record(snapshot, decisions)
        return decisions

    def act(self, decision: policy.Decision, pool: PoolSnapshot | None = None) -> None:
        summary = (
            f"{decision.pool}: {decision.action} {decision.current} -> {decision.desired}: {decision.reason}"
        )
        # The decision itself goes with each line, so the JSON log can be read without parsing the text.
        extra = {"decision": decision.as_dict()}
        if decision.action == "hold":
            LOG.debug("%s", summary, extra=extra)
            return
        if self.settings.dry_run:
            LOG.info("dry run, not acting: %s", summary, extra=extra)
            return
        if self.scale_run_in_progress():
            LOG.info(
                "a scale run is in progress, waiting to plan again from what it leaves: %s",
                summary,
                extra=extra,
            )
            return
        current = decision.current
        if decision.action == "up" and self.fast_path is not None and pool is not None and pool.warm:
            promotion = self.fast_path.promote(decision.pool, decision.current, decision.desired)
            self.exporter.promotion(decision.pool, promotion.result)
            level = logging.INFO if promotion.result == "ok" else logging.WARNING
            LOG.log(
                level,
                "fast path %s: %s (decision: %s)",
                promotion.result,
                promotion.reason,
                summary,
                extra=extra,
            )
            current = promotion.target
        # scale.yml does the rest: replicas past the warm ones, and the promoted ones' warm replacements.
        if self.actuator.start(decision.pool, decision.desired, current, self.unreachable):
            LOG.info("scaling: %s", summary + self.leaving_out(), extra=extra)

    def readmit(self, decision: policy.Decision, pool: PoolSnapshot | None) -> None:
        """Put the replicas that run outside the LB, while no scale run is going, back into it.

        A scale run killed after it started replicas and before it updated the LB leaves them so, and the
        policy holds on them for good: they look like replicas still starting. A scale run at the pool's
        current count adds the running replicas to the LB. Only on the second tick in a row, so that the
        replicas of a run that finished between the collection and this check are not taken for them.
        """
        stranded = pool is not None and bool(pool.unlisted) and decision.current == pool.replicas
        if not stranded or self.scale_run_in_progress():
            self.unlisted_ticks.pop(decision.pool, None)
            return
        ticks = self.unlisted_ticks[decision.pool] = self.unlisted_ticks.get(decision.pool, 0) + 1
        if ticks < 2:
            return
        summary = (
            f"{decision.pool}: {pool.unlisted} running replica(s) not in the LB and no scale run in progress"
            f" (a killed one started them?): a scale run at {decision.current} adds them"
        )
        if self.settings.dry_run:
            LOG.warning("dry run, not acting: %s", summary)
        elif self.actuator.start(decision.pool, decision.current, decision.current, self.unreachable):
            LOG.warning("%s", summary + self.leaving_out())
            self.unlisted_ticks.pop(decision.pool, None)

    def drain_lost_hosts(self) -> None:
        """Stop the LB sending requests to the replicas of a lost Docker host that do not answer (lost.py)."""
        lost = [h for h in self.engines.hosts if h.name in self.unreachable]
        addresses = [a for a in map(host_address, lost) if a]
        if not addresses or self.settings.dry_run:
            return
        drained = drain_lost(self.lb, self.policies, addresses)
        if drained:
            LOG.warning(
                "set draining in the LB, on lost %s: %s", ", ".join(self.unreachable), ", ".join(drained)
            )

    def leaving_out(self) -> str:
        return f" (leaving out unreachable {', '.join(self.unreachable)})" if self.unreachable else ""

    def scale_run_in_progress(self) -> bool:
        """The monitor's own scale run, or any other run that holds scale.yml's lock, is going."""
        if self.actuator.busy():
            return True
        holder = tenfold_lock.read_owner(str(self.settings.scale_lock()))
        return holder is not None and tenfold_lock.is_alive(holder)

    def record(self, snapshot: Snapshot, decisions: list[policy.Decision]) -> None:
        self.last_decisions = {d.pool: d.as_dict() for d in decisions}
        self.last_warnings = list(snapshot.warnings)
        self.exporter.update(snapshot, decisions)
        if self.metrics is None:
            return
        line = json.loads(snapshot.to_json())
        line["decisions"] = [d.as_dict() for d in decisions]
        self.metrics.info(json.dumps(line, sort_keys=True))
        state = {
            "pid": os.getpid(),
            "started": self.started,
            "at": snapshot.at,
            "dry_run": self.settings.dry_run,
            "scale_run_in_progress": self.actuator.busy(),
            "decisions": self.last_decisions,
            "warnings": snapshot.warnings,
            "traffic_state": snapshot.traffic_state,
        }
        path = self.settings.path(self.settings.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        tmp.replace(path)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        LOG.info(
            "monitor of stack %s started (interval %.1fs%s)",
            self.settings.stack,
            self.settings.interval_s,
            ", dry run" if self.settings.dry_run else "",
        )
        next_at = time.monotonic()
        while not self.stopping:
            try:
                self.tick()
            except Exception:  # a bad tick is logged; the monitor keeps watching
                LOG.exception("collection failed")
            self.daily_report()
            next_at += self.settings.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            else:
                _sleep_unless(lambda: self.stopping, delay)
        LOG.info("monitor stopping; letting a scale run in progress finish")
        self.actuator.stop()
        self.close()

    def close(self) -> None:
        self.collector.close()
        self.exporter.close()

    def daily_report(self, now: float | None = None) -> None:
        """Once the UTC date changes, write the previous day's report (`reports/` beside the metrics log).

        `python -m tenfold_monitor report` runs as a child process, so matplotlib and a day of metrics never
        stay in the monitor's memory and the loop never waits for it. A failure is logged, never fatal.
        """
        now = time.time() if now is None else now
        try:
            self._reap_report(now)
            day = _utc_day(now)
            if day == self.report_day:
                return
            self.report_day, previous = day, day - timedelta(days=1)
            if self.report_run is not None:
                LOG.error("performance report of %s not written: the previous one is still running", previous)
                return
            metrics = self.settings.path(self.settings.metrics_log).resolve()
            # the installed package, by the interpreter that runs this one (the console script may not be
            # on PATH under systemd)
            command = [sys.executable, "-m", "tenfold_monitor", "report", "--date", previous.isoformat()]
            command += ["--metrics", str(metrics), "--out", str(metrics.parent / "reports")]
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _reap_report once the child exits)
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
            self.report_run = (proc, now, stderr)
            LOG.info("writing the performance report of %s", previous)
        except Exception:
            LOG.exception("performance report failed")

    def _reap_report(self, now: float) -> None:
        if self.report_run is None:
            return
        proc, started, stderr = self.report_run
        if proc.poll() is None and now - started > REPORT_TIMEOUT_S:
            proc.kill()
            proc.wait(timeout=10)
        if proc.poll() is None:
            return
        self.report_run = None
        stderr.seek(0)
        output = stderr.read().decode(errors="replace").strip()
        stderr.close()
        if proc.returncode == 0:
            LOG.info("performance report %s", output.splitlines()[-1] if output else "written")
        else:
            LOG.error("performance report failed (exit %s): %s", proc.returncode, output[-2000:])

    def _stop(self, *_: object) -> None:
        self.stopping = True


def _utc_day(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()


def _sleep_unless(stopped, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not stopped() and time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def _rotating_logger(name: str, path: Path, max_bytes: int, backups: int) -> logging.Logger:
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger
