"""Replicas that run outside the LB while no scale run is going are put back into it by a scale run."""

from __future__ import annotations

import json
import os
import sys
import time

from ansible_collections.tenfold.stack.plugins.module_utils import lock as tenfold_lock
from tenfold_monitor.collect import PoolSnapshot, Snapshot
from tenfold_monitor.service import Monitor, Settings


class FixedCollector:
    """The backend at 4 running replicas, 3 of them in the LB, and no traffic."""

    def __init__(self, unlisted: int = 1) -> None:
        self.unlisted = unlisted

    def collect(self, now: float) -> Snapshot:
        pool = PoolSnapshot(
            pool="backend",
            replicas=4,
            serving=4 - self.unlisted,
            starting=self.unlisted,
            lb_members=4 - self.unlisted,
            inflight=0,
            cpu_percent=1.0,
            memory_percent=5.0,
            requests=0,
            rps=0.0,
            error_rate=None,
            p50_s=None,
            p95_s=None,
            p99_s=None,
            unlisted=self.unlisted,
        )
        return Snapshot(now, "s", 10.0, 20.0, 1, 0.0, "ok", 5.0, {"backend": pool}, [])

    def close(self) -> None:
        pass


def monitor(tmp_path, collector: FixedCollector, min_replicas: int = 3) -> Monitor:
    settings = Settings(
        stack="s",
        project_dir=str(tmp_path),
        scale_command=[sys.executable, "-c", "import time; time.sleep(0.2)"],
        state_dir=str(tmp_path),
        pools={"backend": {"min_replicas": min_replicas, "stabilization_window_s": 0.0, "cooldown_s": 0.0}},
    )
    return Monitor(settings, collector=collector)


def started(tmp_path) -> list[str]:
    log = tmp_path / "logs" / "monitor-scale-runs.log"
    return [line for line in log.read_text().splitlines() if line.startswith("===")] if log.exists() else []


def test_a_replica_outside_the_lb_is_readmitted_at_the_current_count_on_the_second_tick(tmp_path):
    mon = monitor(tmp_path, FixedCollector())
    now = time.time()
    decision = mon.tick(now)[0]
    assert (decision.action, decision.desired, "starting") == ("hold", 4, decision.limits[0])
    assert started(tmp_path) == []  # one tick could be a run that has just finished
    mon.tick(now + 1)
    assert len(started(tmp_path)) == 1
    assert "-e pool=backend -e replicas=4 -e expect_current=4 -e trigger=monitor" in started(tmp_path)[0]


def test_no_readmission_while_a_scale_run_holds_the_lock_or_every_replica_is_in_the_lb(tmp_path):
    lock = tmp_path / "scale.lock"  # in the state directory
    lock.write_text(json.dumps(vars(tenfold_lock.owner_for(os.getpid()))))  # a live run holds it
    mon = monitor(tmp_path, FixedCollector())
    for i in range(3):
        mon.tick(time.time() + i)
    assert started(tmp_path) == []
    lock.unlink()
    mon = monitor(tmp_path, FixedCollector(unlisted=0), min_replicas=4)  # holds at 4
    for i in range(3):
        mon.tick(time.time() + i)
    assert started(tmp_path) == []


def test_a_decision_waits_while_another_run_holds_the_lock_and_carries_the_size_it_was_made_on(tmp_path):
    lock = tmp_path / "scale.lock"  # in the state directory
    lock.write_text(json.dumps(vars(tenfold_lock.owner_for(os.getpid()))))  # an operator's run holds it
    mon = monitor(tmp_path, FixedCollector(unlisted=0), min_replicas=6)  # the policy wants 4 -> 6
    decision = mon.tick(time.time())[0]
    assert (decision.action, decision.current, decision.desired) == ("up", 4, 6)
    assert started(tmp_path) == []  # not queued behind the lock: planned again once it is free
    lock.unlink()
    mon.tick(time.time() + 1)
    [run] = started(tmp_path)
    assert "-e pool=backend -e replicas=6 -e expect_current=4 -e trigger=monitor" in run
