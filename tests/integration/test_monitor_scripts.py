"""scaling-service.sh runs the monitor in the background; monitor-performance.sh prints one collection."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from benchkit.monitor import MONITOR_DECISIONS, MONITOR_METRICS, monitor_settings
from helpers import BIN, ROOT, STACK_VARS, STATE_DIR, ansible_env

pytestmark = pytest.mark.integration


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def service_env(stack, tmp_path):
    settings = tmp_path / "monitor.json"
    settings.write_text(
        json.dumps(
            monitor_settings(
                stack.name,
                stack.status_port,
                tmp_path,
                STATE_DIR,
                [str(BIN / "ansible-playbook"), "scale.yml", "-e", f"@{STACK_VARS}"],
                interval_s=1.0,
                dry_run=True,
            )
        )
    )
    env = {
        **ansible_env(),
        "TENFOLD_STACK": stack.name,
        "TENFOLD_MONITOR_CONFIG": str(settings),
        "TENFOLD_MONITOR_PERF_LOG": str(tmp_path / "monitor-performance.log"),
    }
    yield env, tmp_path
    run("scaling-service.sh", "stop", env=env)
    for log in service_logs(stack.name):
        log.unlink(missing_ok=True)


def service_logs(stack: str) -> list[Path]:
    """The monitor's stderr under scaling-service.sh, and the previous start's."""
    log = ROOT / "logs" / f"scaling-service-{stack}.log"
    return [log, log.with_name(log.name + ".1")]


def test_scaling_service_starts_reports_and_stops_the_monitor(service_env):
    env, workdir = service_env
    started = run("scaling-service.sh", "start", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((ROOT / "logs" / f"scaling-service-{env['TENFOLD_STACK']}.pid").read_text())
    assert os.path.exists(f"/proc/{pid}")
    deadline = time.monotonic() + 30
    while not (workdir / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    again = run("scaling-service.sh", "start", env=env)
    assert "already running" in again.stdout
    status = run("scaling-service.sh", "status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"pid {pid}" in status.stdout
    assert "(dry run)" in status.stdout
    assert "backend" in status.stdout and "frontend" in status.stdout
    assert (workdir / MONITOR_METRICS).read_text().strip()
    # One writer per file: the monitor's text log is its stderr, its decisions log JSON lines of its own.
    stderr_log, previous = service_logs(env["TENFOLD_STACK"])
    assert f"monitor of stack {env['TENFOLD_STACK']} started" in stderr_log.read_text()
    first = json.loads((workdir / MONITOR_DECISIONS).read_text().splitlines()[0])
    assert first["message"].startswith(f"monitor of stack {env['TENFOLD_STACK']} started")
    stopped = run("scaling-service.sh", "stop", env=env)
    assert stopped.returncode == 0
    assert (
        not os.path.exists(f"/proc/{pid}")
        or b"tenfold-monitor" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    assert run("scaling-service.sh", "status", env=env).returncode == 3
    restarted = run("scaling-service.sh", "start", env=env)  # the last run's log is kept as .1
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "monitor stopping" in previous.read_text()
    assert run("scaling-service.sh", "stop", env=env).returncode == 0


def test_monitor_performance_prints_one_collection_of_the_stack(service_env):
    env, workdir = service_env
    result = run("monitor-performance.sh", "--config", env["TENFOLD_MONITOR_CONFIG"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    body = result.stdout.split("\n", 1)[1]
    report = json.loads(body)
    pools = {d["pool"]: d for d in report["decisions"]}
    assert set(pools) == {"frontend", "backend"}
    assert pools["backend"]["current"] == 3
    assert pools["backend"]["action"] == "hold"
    assert (workdir / "monitor-performance.log").read_text().count('"decisions"') == 1
    # A collection on the side writes none of a running monitor's files.
    assert sorted(p.name for p in workdir.iterdir()) == ["monitor-performance.log", "monitor.json"]
