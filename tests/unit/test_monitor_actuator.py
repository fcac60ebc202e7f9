"""The monitor's edges that need no stack: scale events for the cooldown, and one scale run at a time."""

from __future__ import annotations

import json
import sys
import time

from tenfold_monitor import events
from tenfold_monitor.actuator import Actuator


def event(stack, end, pools, result="ok"):
    return json.dumps({"stack": stack, "end": end, "result": result, "trigger": "manual", "pools": pools})


def test_last_scaled_reads_each_pools_latest_event_of_its_stack(tmp_path):
    path = tmp_path / "scale-events.jsonl"
    lines = [
        event(
            "s",
            "2026-11-27T10:00:00.000Z",
            [{"pool": "backend", "current": 3, "target": 4, "direction": "up"}],
        ),
        "{not json",
        event(
            "other",
            "2026-11-27T10:05:00.000Z",
            [{"pool": "backend", "current": 3, "target": 9, "direction": "up"}],
        ),
        event(
            "s",
            "2026-11-27T10:02:00.000Z",
            [
                {"pool": "backend", "current": 4, "target": 3, "direction": "down"},
                {"pool": "frontend", "current": 3, "target": 3, "direction": "none"},
            ],
            result="failed",
        ),
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    found = events.last_scaled(path, "s")
    assert set(found) == {"backend"}  # the frontend was not part of any run
    assert found["backend"] == events._epoch("2026-11-27T10:02:00.000Z")


def test_a_rotation_right_after_a_scale_event_keeps_its_cooldown(tmp_path):
    path = tmp_path / "scale-events.jsonl"
    up = [{"pool": "backend", "current": 3, "target": 4, "direction": "up"}]
    (tmp_path / "scale-events.jsonl.1").write_text(event("s", "2026-11-27T10:00:00.000Z", up) + "\n")
    assert events.last_scaled(path, "s") == {"backend": events._epoch("2026-11-27T10:00:00.000Z")}
    down = [{"pool": "backend", "current": 4, "target": 3, "direction": "down"}]
    path.write_text(event("s", "2026-11-27T10:01:00.000Z", down) + "\n")
    assert events.last_scaled(path, "s") == {"backend": events._epoch("2026-11-27T10:01:00.000Z")}


def test_missing_events_file_means_no_cooldown(tmp_path):
    assert events.last_scaled(tmp_path / "nope.jsonl", "s") == {}


def test_actuator_runs_one_scale_run_at_a_time_and_reports_its_end(tmp_path):
    log = tmp_path / "runs.log"
    actuator = Actuator([sys.executable, "-c", "import time; time.sleep(0.5)"], cwd=tmp_path, log_path=log)
    assert actuator.start("backend", 5, 3)
    assert actuator.busy()
    assert not actuator.start("backend", 6, 3)  # refused while the first runs
    assert actuator.poll() is None
    deadline = time.monotonic() + 10
    finished = None
    while finished is None and time.monotonic() < deadline:
        finished = actuator.poll()
        time.sleep(0.05)
    assert finished is not None
    assert (finished.pool, finished.replicas, finished.returncode) == ("backend", 5, 0)
    assert actuator.poll() is None  # reported once
    assert "pool=backend -e replicas=5 -e expect_current=3 -e trigger=monitor" in log.read_text()


def test_a_run_that_recovered_the_lock_of_a_killed_one_counts_for_every_pool(tmp_path):
    path = tmp_path / "scale-events.jsonl"
    line = json.loads(
        event(
            "s",
            "2026-11-27T11:00:00.000Z",
            [
                {"pool": "backend", "current": 4, "target": 4, "direction": "none"},
                {"pool": "frontend", "current": 3, "target": 3, "direction": "none"},
            ],
        )
    )
    path.write_text(json.dumps({**line, "recovered_from": {"pid": 4242, "run": "scale.yml {}"}}) + "\n")
    at = events._epoch("2026-11-27T11:00:00.000Z")
    assert events.last_scaled(path, "s") == {"backend": at, "frontend": at}
