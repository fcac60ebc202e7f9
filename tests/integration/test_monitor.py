"""The monitor on the real stack: spikes scale the backend up, quiet scales it down, cooldowns last."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from benchkit.load import Load
from benchkit.monitor import MONITOR_DECISIONS, MONITOR_METRICS, monitor_settings
from conftest import pool_containers
from helpers import (
    BIN,
    ROOT,
    STACK_VARS,
    STATE_DIR,
    ansible_env,
    events_count,
    events_since,
    playbook,
    wait_for,
)

pytestmark = pytest.mark.integration

# 48 clients, each on an address of its own, none on the allowlist: at 110 req/s, 2.3 req/s each.
SPIKE_SOURCES = [f"127.0.5.{i}" for i in range(1, 49)]


def backend_replicas(engine, stack) -> int:
    return len(pool_containers(engine, stack, "backend"))


class MonitorProcess:
    """`tenfold-monitor run` for the test stack, with its own settings and log files."""

    def __init__(self, stack, workdir: Path, settings: dict | None = None, **policy) -> None:
        """`policy` sets the backend pool's policy; `settings`, the monitor's own (lb_status_url, say)."""
        self.workdir = workdir
        self.settings = workdir / "monitor.json"
        pool = {"min_replicas": 3, "max_replicas": 10, "target_rps_per_replica": 15.0, **policy}
        self.settings.write_text(
            json.dumps(
                monitor_settings(
                    stack.name,
                    stack.status_port,
                    workdir,
                    STATE_DIR,
                    [str(BIN / "ansible-playbook"), "scale.yml", "-e", f"@{STACK_VARS}"],
                    interval_s=1.0,
                    window_s=5.0,
                    pools={"backend": pool},
                    **(settings or {}),
                )
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "tenfold-monitor"), "run", "--config", str(self.settings)],
            cwd=ROOT,
            env=ansible_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill()

    def decisions(self) -> list[tuple[float, dict]]:
        path = self.workdir / MONITOR_METRICS
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            for decision in entry.get("decisions", []):
                found.append((entry["at"], decision))
        return found

    def log(self) -> str:
        path = self.workdir / MONITOR_DECISIONS
        return path.read_text() if path.exists() else ""


def first_decision(monitor: MonitorProcess, action: str) -> float | None:
    times = [at for at, d in monitor.decisions() if d["pool"] == "backend" and d["action"] == action]
    return min(times) if times else None


def test_spike_scales_the_backend_up_fast_and_quiet_scales_it_down_with_no_failed_request(
    engine, stack, tmp_path
):
    before = events_count()
    monitor = MonitorProcess(stack, tmp_path, stabilization_window_s=10.0, cooldown_s=5.0)
    monitor.start()
    try:
        time.sleep(4)  # the monitor's window fills with the idle baseline
        assert backend_replicas(engine, stack) == 3
        spike = Load(
            stack.https_port, ["/api/work?ms=50"], rate=110, workers=48, sources=SPIKE_SOURCES, max_seconds=90
        )
        with spike:
            spike_start = time.time()
            decided = wait_for(
                lambda: next(
                    (at for at, d in monitor.decisions() if d["pool"] == "backend" and d["action"] == "up"),
                    None,
                ),
                timeout=20,
            )
            assert decided is not None, monitor.log()[-3000:]
            reaction = decided - spike_start
            assert wait_for(lambda: backend_replicas(engine, stack) > 3, timeout=40), monitor.log()[-3000:]
            scaled_up = events_since(before)
            assert wait_for(lambda: events_since(before), timeout=40)
            time.sleep(3)
        assert spike.tally.failed == 0, dict(spike.tally.failures)
        first = next(d for _, d in monitor.decisions() if d["pool"] == "backend" and d["action"] == "up")
        print(
            f"\nspike: decision {reaction:.1f}s after the spike started ({first['reason']});"
            f" {spike.tally.sent} requests"
        )
        assert reaction <= 10, f"the monitor decided {reaction:.1f}s after the spike started"

        # Quiet (a trickle of traffic): after the stabilization window the monitor scales back down.
        trickle = Load(
            stack.https_port, ["/api/work?ms=20"], rate=5, workers=1, sources=SPIKE_SOURCES, max_seconds=90
        )
        with trickle:
            assert wait_for(lambda: backend_replicas(engine, stack) == 3, timeout=75), monitor.log()[-3000:]
        assert trickle.tally.failed == 0, dict(trickle.tally.failures)
        runs = events_since(before)
        assert [r["trigger"] for r in runs] == ["monitor"] * len(runs)
        assert all(r["result"] == "ok" for r in runs), runs
        assert scaled_up is not None
    finally:
        monitor.stop()
        playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")


@pytest.mark.long
def test_a_restarted_monitor_keeps_the_cooldown_of_the_last_scale_event(engine, stack, tmp_path):
    # A scale event now, then a monitor that would scale down at once were it not for the cooldown.
    assert playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=5").rc == 0
    scaled_at = time.time()
    monitor = MonitorProcess(stack, tmp_path, stabilization_window_s=1.0, cooldown_s=25.0)
    monitor.start()
    try:
        time.sleep(4)
        monitor.kill()  # killed mid-run, in-memory state lost
        monitor.start()
        downs = wait_for(
            lambda: [at for at, d in monitor.decisions() if d["pool"] == "backend" and d["action"] == "down"],
            timeout=45,
        )
        assert downs, monitor.log()[-3000:]
        assert min(downs) - scaled_at >= 25 - 1.5, "scaled down inside the cooldown after a restart"
        assert wait_for(lambda: backend_replicas(engine, stack) == 3, timeout=40)
    finally:
        monitor.stop()
        playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
