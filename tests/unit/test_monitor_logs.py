"""The monitor's log files: one writer each, and the decisions log as JSON lines."""

from __future__ import annotations

import json
import logging

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import policy
from tenfold_monitor import logsetup
from tenfold_monitor.service import Monitor, Settings
from test_monitor_readmit import FixedCollector

UP = policy.Decision("backend", 4, 6, "up", "rps 120 above the target", {"rps": 6}, False, ())


@pytest.fixture
def root_logging():
    """logsetup.setup replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def settings(tmp_path, **values) -> Settings:
    return Settings(stack="s", project_dir=str(tmp_path), pools={"backend": {}}, **values)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_decision_is_logged_as_one_json_line_that_carries_the_decision(tmp_path, root_logging):
    log = tmp_path / "logs" / "monitor-decisions.jsonl"
    logsetup.setup(log)
    Monitor(settings(tmp_path, dry_run=True), collector=FixedCollector(0)).act(UP)
    [line] = lines(log)
    assert line["level"] == "INFO" and line["logger"] == "tenfold.monitor"
    assert line["message"] == "dry run, not acting: backend: up 4 -> 6: rps 120 above the target"
    assert line["decision"] == UP.as_dict()
    assert line["time"].endswith("+00:00") and line["at"] > 0


def test_a_failure_is_one_line_with_its_traceback(tmp_path, root_logging):
    log = tmp_path / "decisions.jsonl"
    logsetup.setup(log)
    try:
        raise RuntimeError("docker went away\nsecond line")
    except RuntimeError:
        logging.getLogger("tenfold.monitor").exception("collection failed")
    [line] = lines(log)  # the newline in the message stays inside the JSON string
    assert line["level"] == "ERROR" and line["message"] == "collection failed"
    assert "RuntimeError: docker went away" in line["exception"]


def test_the_text_on_stderr_has_no_time_of_its_own_under_the_journal(monkeypatch, capsys, root_logging):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    logsetup.setup(None)
    logging.getLogger("tenfold.monitor").warning("LB counters unreachable")
    assert capsys.readouterr().err == "WARNING tenfold.monitor: LB counters unreachable\n"


def test_once_writes_no_file_so_a_running_monitor_stays_their_only_writer(tmp_path):
    once = Monitor(settings(tmp_path, dry_run=True), collector=FixedCollector(0), writes=False)
    decisions = once.tick(now=1000.0)
    once.close()
    assert [d.pool for d in decisions] == ["backend"]
    assert once.last_warnings == []
    assert not (tmp_path / "logs").exists()  # no metrics line, no state file, no decisions log
    running = Monitor(settings(tmp_path, dry_run=True), collector=FixedCollector(0))
    running.tick(now=1000.0)
    running.close()
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "monitor-state.json",
        "performance-metrics.jsonl",
    ]
