#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Load tests through a stack's load balancer with locust (headless), checked against the seed's criteria.

    load_test.py [scenarios] [options]   the seed's scenarios: 10, 50, 100, 200, 500 and 1000 concurrent
                                         users (closed model), 60 s each -> logs/load-test-results.json
    load_test.py spike [options]         a baseline rate, 10x that rate held, back to the baseline, with the
                                         monitor running -> logs/load-test-spike.json and .png

scripts/load-test.sh runs this with the project's virtual environment. The evaluation (statistics, criteria,
result files, the timeline) is scripts/tenfold_load.py; the users are scripts/load/locustfile.py.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from ansible_collections.tenfold.stack.plugins.module_utils.pool import LABEL_POOL, LABEL_STACK

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tenfold_load as tl
from benchlib import BIN, MONITOR_METRICS, ROOT, ansible_playbook, json_lines, monitor_settings, on_sigterm

LOCUSTFILE = ROOT / "scripts" / "load" / "locustfile.py"
SHAPEFILE = ROOT / "scripts" / "load" / "spike_shape.py"
DEFAULT_USERS = (10, 50, 100, 200, 500, 1000)
DEFAULT_SOURCES = "127.0.3.1-127.0.3.16"
# The spike's clients are as the Internet sends them: many addresses, none on the allowlist, each far below
# the per-address limits (a spike of 500 users at 1 req/s: 2.5 connections and req/s per address).
SPIKE_SOURCES = "127.0.5.1-127.0.5.200"
SPIKE_MIN_SOURCES = 100
POOLS = ("frontend", "backend")
SHORT = {"duration": 3.0, "baseline_s": 6.0, "spike_s": 14.0, "after_s": 6.0, "baseline_rps": 20.0}
CLOSED_MODEL = "closed: each user sends its next request when the last is answered (locust SiteUser)"
OPEN_MODEL = (
    "approximately open: users x {rate:g} req/s each (locust PacedUser, constant_throughput); a user whose "
    "answer takes longer than {interval:g} s falls behind, and started_rps shows it"
)


class LoadTestError(RuntimeError):
    """Bad input or a failed step: the message says what to do."""


# --- the target -----------------------------------------------------------------------------------
@dataclass
class Target:
    stack: str
    address: str
    https_port: int
    status_port: int
    allowlist: list[str]
    vars_file: Path | None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.https_port}"

    def describe(self) -> str:
        return f"stack {self.stack}, {self.url}"

    def scale_command(self) -> list[str]:
        extra = ["-e", f"@{self.vars_file}"] if self.vars_file else []
        return [ansible_playbook(), "scale.yml", *extra]


def load_target(vars_file: Path | None) -> Target:
    """The stack to load: the local inventory's (and the roles' defaults), or a vars file's values over it."""
    values: dict = {}
    for path in (ROOT / "inventories" / "local" / "group_vars" / "all.yml", vars_file):
        if path is None:
            continue
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LoadTestError(f"cannot read the stack's variables from {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise LoadTestError(f"{path}: not a mapping of variables")
        values.update(loaded)
    address = str(values.get("nginx_lb_listen_address") or "127.0.0.1")
    if address in ("0.0.0.0", "::", "*"):
        address = "127.0.0.1"
    try:
        if not ipaddress.ip_address(address).is_loopback:
            raise LoadTestError(f"the load balancer listens on {address}: load tests only target loopback")
        https, status = (
            int(values.get("nginx_lb_https_port", 443)),
            int(values.get("nginx_lb_status_port", 8081)),
        )
    except ValueError as exc:
        raise LoadTestError(f"bad stack variables: {exc}") from None
    return Target(
        stack=str(values.get("tenfold_stack", "tenfold")),
        address=address,
        https_port=https,
        status_port=status,
        allowlist=[str(a) for a in values.get("nginx_lb_allowlist") or []],
        vars_file=vars_file.resolve() if vars_file else None,
    )


def parse_sources(text: str) -> list[str]:
    """`127.0.3.1-127.0.3.16` or `a,b,c`: loopback addresses only."""
    found: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, _, last = part.partition("-")
        try:
            low = ipaddress.IPv4Address(first)
            high = ipaddress.IPv4Address(last) if last else low
        except ValueError:
            raise LoadTestError(f"--sources: {part!r} is not an address or a range a-b") from None
        if high < low or int(high) - int(low) > 255:
            raise LoadTestError(f"--sources: {part!r} is not a range of at most 256 addresses")
        found += [str(ipaddress.IPv4Address(i)) for i in range(int(low), int(high) + 1)]
    for address in found:
        if not ipaddress.ip_address(address).is_loopback:
            raise LoadTestError(f"--sources: {address} is not a loopback address")
    return found


def check_spike_sources(sources: Sequence[str], outside: Sequence[str]) -> None:
    """The spike's clients: at least SPIKE_MIN_SOURCES addresses, none exempt from the LB's limits."""
    if len(sources) < SPIKE_MIN_SOURCES:
        raise LoadTestError(
            f"--sources: the spike needs at least {SPIKE_MIN_SOURCES} client addresses, got {len(sources)}"
        )
    exempt = [s for s in sources if s not in set(outside)]
    if exempt:
        raise LoadTestError(
            f"--sources: {exempt[0]} (and {len(exempt) - 1} more) is in nginx_lb_allowlist: the spike's"
            " clients must meet the limits every client meets"
        )


def outside_allowlist(sources: Sequence[str], allowlist: Sequence[str]) -> list[str]:
    networks = []
    for entry in allowlist:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return [s for s in sources if not any(ipaddress.ip_address(s) in n for n in networks)]


# --- locust ---------------------------------------------------------------------------------------
@dataclass
class LocustRun:
    """One headless locust run; its per-second record and its log in `workdir`."""

    workdir: Path
    name: str
    target: Target
    sources: list[str]
    paths: str
    env: dict[str, str] = field(default_factory=dict)
    host: str = ""  # default: the target's LB
    cpu_s: float = 0.0  # CPU time (user + system) locust used in the last run

    @property
    def seconds_file(self) -> Path:
        return self.workdir / f"{self.name}.seconds.jsonl"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.locust.log"

    def run(self, args: Sequence[str], limit_s: float, files: Sequence[Path] = (LOCUSTFILE,)) -> float:
        """Run locust to the end (it stops itself; killed after `limit_s`); returns its start (epoch s)."""
        for stale in (self.seconds_file, Path(f"{self.seconds_file}.start")):
            stale.unlink(missing_ok=True)
        env = {
            **os.environ,
            **self.env,
            "TENFOLD_LOAD_SOURCES": ",".join(self.sources),
            "TENFOLD_LOAD_SECONDS": str(self.seconds_file),
            "TENFOLD_LOAD_PATHS": self.paths,
        }
        locust = BIN / "locust"
        cmd = [
            str(locust if locust.exists() else "locust"),
            "-f",
            ",".join(str(f) for f in files),
            *args,
            "--headless",
            "--host",
            self.host or self.target.url,
            "--only-summary",
            "--exit-code-on-error",
            "0",
            "--stop-timeout",
            "2",
            "--loglevel",
            "WARNING",
        ]
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with self.log.open("w") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise LoadTestError(
                    f"locust ran past {limit_s:.0f} s and was killed (log: {self.log})"
                ) from None
            except KeyboardInterrupt:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=15)
                raise
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
        started = Path(f"{self.seconds_file}.start")
        if rc != 0 or not started.exists():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise LoadTestError(f"locust exited {rc} (log: {self.log}):\n{tail}")
        return float(started.read_text())


# --- scenarios ------------------------------------------------------------------------------------
def run_scenarios(args: argparse.Namespace, target: Target, criteria: tl.Criteria, workdir: Path) -> dict:
    results = []
    for users in args.users:
        name = f"users-{users}"
        print(f"scenario {name}: {users} users for {args.duration:g} s ...", flush=True)
        run = LocustRun(workdir, name, target, args.sources, args.paths)
        run.run(
            ["SiteUser", "-u", str(users), "-r", str(users), "-t", f"{args.duration:g}s"],
            limit_s=args.duration + 90,
        )
        seconds = tl.read_seconds(run.seconds_file)
        result = tl.scenario_result(name, users, args.duration, seconds, criteria)
        result["generator_cpu_s"] = round(run.cpu_s, 2)
        results.append(result)
    return tl.results_document(results, criteria, meta(target, args, CLOSED_MODEL))


def meta(target: Target, args: argparse.Namespace, model: str) -> dict:
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": target.describe(),
        "model": model,
        "generator": f"locust {locust_version()}",
        "paths": args.paths.split(","),
        "sources": f"{args.sources[0]}-{args.sources[-1]} ({len(args.sources)} addresses)",
    }


def locust_version() -> str:
    try:
        from importlib.metadata import version

        return version("locust")
    except Exception:  # only a label in the result file
        return "unknown"


# --- the spike ------------------------------------------------------------------------------------
class Monitor:
    """`python -m tenfold_monitor run` for the target stack, its settings and logs in `workdir`."""

    def __init__(self, target: Target, workdir: Path, settings: dict, code: Path | None = None) -> None:
        """`code`: None for the installed monitor package, or another checkout's monitor/ directory, to
        compare with a version from before the package (its __main__ found its module_utils itself)."""
        self.workdir = workdir
        self.code = code
        self.metrics = workdir / MONITOR_METRICS
        self.events = workdir / "scale-events.jsonl"  # its scale runs use workdir as tenfold_state_dir
        command = [*target.scale_command(), "-e", f"tenfold_state_dir={workdir}"]
        values = monitor_settings(target.stack, target.status_port, workdir, workdir, command, **settings)
        self.config = workdir / "monitor.json"
        self.config.write_text(json.dumps(values, indent=2) + "\n")
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **({"PYTHONPATH": str(self.code)} if self.code else {}),
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }

    def start(self) -> None:
        with (self.workdir / "monitor-stderr.log").open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tenfold_monitor", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def wait_for_lines(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count:
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                tail = (self.workdir / "monitor-stderr.log").read_text(errors="replace")[-2000:]
                raise LoadTestError(f"the monitor wrote no metrics in {timeout:.0f} s:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM: the monitor lets a scale run in progress finish (up to 60 s), then exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def lines(self) -> list[dict]:
        return json_lines(self.metrics)


def pool_sizes(stack: str) -> dict[str, int]:
    """Running containers per pool of the stack, from Docker."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "--filter",
            f"label={LABEL_STACK}={stack}",
            "--format",
            f'{{{{.Label "{LABEL_POOL}"}}}} {{{{.Names}}}}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise LoadTestError(f"docker ps failed: {out.stderr.strip()}")
    sizes = {pool: 0 for pool in POOLS}
    for line in out.stdout.splitlines():
        pool, _, name = line.partition(" ")
        if pool in sizes and not name.endswith("-warm"):  # warm replicas are not the pool's size
            sizes[pool] += 1
    return sizes


def scale_to(target: Target, sizes: dict[str, int], workdir: Path, env: dict[str, str]) -> None:
    """Scale runs that record their events in workdir/restore/, apart from the monitor's."""
    for pool, replicas in sizes.items():
        log = workdir / f"restore-{pool}.log"
        with log.open("w") as out:
            rc = subprocess.run(
                [
                    *target.scale_command(),
                    "-e",
                    f"pool={pool}",
                    "-e",
                    f"replicas={replicas}",
                    "-e",
                    "trigger=manual",
                    "-e",
                    f"tenfold_state_dir={workdir / 'restore'}",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            ).returncode
        if rc != 0:
            raise LoadTestError(f"restoring {pool} to {replicas} replicas failed (log: {log})")


def run_spike(args: argparse.Namespace, target: Target, criteria: tl.Criteria, workdir: Path) -> dict:
    phases = tl.spike_phases(
        args.baseline_rps, args.factor, args.baseline_s, args.spike_s, args.after_s, args.user_rate
    )
    stages = [[p.end_s, p.users] for p in phases]
    before = pool_sizes(target.stack)
    if not any(before.values()):
        raise LoadTestError(f"stack {target.stack} has no app containers: bring it up first (make up)")
    print(
        f"spike on {target.describe()}: {phases[0].offered_rps:g} req/s for {args.baseline_s:g} s, "
        f"{phases[1].offered_rps:g} req/s for {args.spike_s:g} s, {phases[2].offered_rps:g} req/s for "
        f"{args.after_s:g} s; pools {before}",
        flush=True,
    )
    monitor = None
    if args.monitor:
        settings = json.loads(args.monitor_settings.read_text()) if args.monitor_settings else {}
        monitor = Monitor(
            target,
            workdir,
            {"interval_s": args.monitor_interval, "window_s": args.monitor_window, **settings},
        )
        monitor.start()
    run = LocustRun(
        workdir,
        "spike",
        target,
        args.sources,
        args.paths,
        env={
            "TENFOLD_LOAD_STAGES": json.dumps(stages),
            "TENFOLD_LOAD_USER_RATE": f"{args.user_rate:g}",
        },
    )
    try:
        if monitor:
            monitor.wait_for_lines(2, timeout=60)
        start = run.run(["PacedUser"], limit_s=phases[-1].end_s + 90, files=(LOCUSTFILE, SHAPEFILE))
    finally:
        if monitor:
            monitor.stop()
        if args.restore:
            restore(target, before, workdir, monitor.env() if monitor else dict(os.environ))
    lines = monitor.lines() if monitor else []
    seconds = tl.read_seconds(run.seconds_file)
    generator_cpu_s = round(run.cpu_s, 2)
    rows = tl.timeline(seconds, start, phases, lines)
    evaluated = tl.evaluate_spike(seconds, start, phases, criteria)
    doc = tl.spike_document(
        rows,
        evaluated,
        criteria,
        {
            **meta(target, args, OPEN_MODEL.format(rate=args.user_rate, interval=1 / args.user_rate)),
            "start": start,
            "factor": args.factor,
            "pools_before": before,
            "monitor": bool(monitor),
            "generator_cpu_s": generator_cpu_s,
            "scale_events": json_lines(monitor.events) if monitor else [],
        },
    )
    return doc


def restore(target: Target, before: dict[str, int], workdir: Path, env: dict[str, str]) -> None:
    """Scale the pools back to their sizes before the spike (the monitor has stopped: nothing moves them)."""
    after = pool_sizes(target.stack)
    if after != before:
        print(f"restoring the pools to {before} (now {after}) ...", flush=True)
        scale_to(target, {p: n for p, n in before.items() if after.get(p) != n}, workdir, env)


# --- the command line -----------------------------------------------------------------------------
def number_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need at least one user count, each >= 1: {text!r}")
    return values


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--vars",
        type=Path,
        help="the stack's variables (YAML, like tests/integration/stack.yml); "
        "default: inventories/local and the roles' defaults",
    )
    common.add_argument(
        "--sources",
        help=f"load source addresses: the scenarios' allowlisted (default {DEFAULT_SOURCES}); the spike's"
        f" at least {SPIKE_MIN_SOURCES}, none allowlisted (default {SPIKE_SOURCES})",
    )
    common.add_argument(
        "--paths",
        default="/,/api/work?ms=20",
        help="paths the users cycle through (default /,/api/work?ms=20)",
    )
    common.add_argument("--short", action="store_true", help="the short profile (seconds, for tests)")
    common.add_argument("--out", type=Path, help="result file")
    common.add_argument(
        "--workdir",
        type=Path,
        help="keep locust's and the monitor's logs here (default: a temporary directory)",
    )
    common.add_argument("--min-rps", type=float, default=tl.Criteria.min_rps)
    common.add_argument("--max-p95", type=float, default=tl.Criteria.max_p95_s, help="seconds")
    common.add_argument("--max-errors", type=float, default=tl.Criteria.max_error_percent, help="percent")
    top = argparse.ArgumentParser(
        prog="load-test.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = top.add_subparsers(dest="command")
    scen = sub.add_parser("scenarios", parents=[common], help="the seed's concurrent-user scenarios")
    scen.add_argument(
        "--users",
        type=number_list,
        default=list(DEFAULT_USERS),
        help="comma-separated (default 10,50,100,200,500,1000)",
    )
    scen.add_argument("--duration", type=positive, help="seconds per scenario (default 60; --short: 3)")
    spike = sub.add_parser("spike", parents=[common], help="baseline, 10x spike, back down, with the monitor")
    spike.add_argument(
        "--baseline-rps",
        type=positive,
        help="offered req/s before and after the spike (default 50; --short: 20)",
    )
    spike.add_argument(
        "--factor", type=positive, default=10.0, help="the spike's rate / the baseline's (default 10)"
    )
    spike.add_argument("--baseline-s", type=positive, help="seconds of baseline (default 60; --short: 6)")
    spike.add_argument("--spike-s", type=positive, help="seconds of spike (default 120; --short: 14)")
    spike.add_argument(
        "--after-s", type=positive, help="seconds back at the baseline (default 60; --short: 6)"
    )
    spike.add_argument("--user-rate", type=positive, default=1.0, help="req/s of one user (default 1)")
    spike.add_argument("--no-monitor", dest="monitor", action="store_false", help="without the monitor")
    spike.add_argument("--monitor-settings", type=Path, help="JSON merged over the monitor's settings")
    spike.add_argument(
        "--monitor-interval", type=positive, default=2.0, help="seconds (default 2; --short: 1)"
    )
    spike.add_argument(
        "--monitor-window", type=positive, default=10.0, help="seconds (default 10; --short: 5)"
    )
    spike.add_argument(
        "--no-restore", dest="restore", action="store_false", help="leave the pools as the spike left them"
    )
    spike.add_argument("--plot", type=Path, help="PNG of the timeline (default: next to --out)")
    return top


def apply_profile(args: argparse.Namespace) -> None:
    defaults = {"duration": 60.0, "baseline_s": 60.0, "spike_s": 120.0, "after_s": 60.0, "baseline_rps": 50.0}
    for key, value in defaults.items():
        if getattr(args, key, "absent") is None:
            setattr(args, key, SHORT[key] if args.short else value)
    if args.command == "spike" and args.short:
        if "--monitor-interval" not in sys.argv:
            args.monitor_interval = 1.0
        if "--monitor-window" not in sys.argv:
            args.monitor_window = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "scenarios")
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        apply_profile(args)
        criteria = tl.Criteria(args.min_rps, args.max_p95, args.max_errors)
        target = load_target(args.vars)
        spike = args.command == "spike"
        args.sources = parse_sources(args.sources or (SPIKE_SOURCES if spike else DEFAULT_SOURCES))
        missing = outside_allowlist(args.sources, target.allowlist)
        if spike:
            check_spike_sources(args.sources, missing)
        elif missing:
            print(
                f"warning: {len(missing)} load source(s) ({missing[0]}, ...) are not in nginx_lb_allowlist "
                f"of {target.stack}: the rate limiter will answer them with 429",
                file=sys.stderr,
            )
        default_out = "load-test-results.json" if args.command == "scenarios" else "load-test-spike.json"
        out = args.out or ROOT / "logs" / default_out
        with tempfile.TemporaryDirectory(prefix="tenfold-load-") as scratch:
            workdir = args.workdir or Path(scratch)
            workdir.mkdir(parents=True, exist_ok=True)
            if args.command == "scenarios":
                doc = run_scenarios(args, target, criteria, workdir)
                problems = tl.validate_results(doc)
                table = tl.scenario_table(doc["scenarios"])
            else:
                doc = run_spike(args, target, criteria, workdir)
                problems = tl.validate_spike(doc)
                table = tl.phase_table(doc["phases"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        if args.command == "spike":
            plot = args.plot or out.with_suffix(".png")
            tl.plot_spike(doc, plot)
            print(f"plot: {plot}")
        verdict = "PASS" if doc["pass"] else "FAIL"
        print(f"\n{table}\n\nmodel: {doc['model']}\nresults: {out}\noverall: {verdict}")
        if problems:
            print("result file incomplete: " + "; ".join(problems), file=sys.stderr)
            return 2
        return 0 if doc["pass"] else 1
    except (LoadTestError, tl.ResultError) as exc:
        print(f"load-test: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("load-test: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
