# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""`python -m tenfold_monitor run` on a bench's stack, its settings and logs in a work directory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchkit.host import ROOT, BenchError, json_lines, stop_process
from benchkit.stack import Stack

# The monitor's metrics log and decisions log in a bench's or a test's work directory (monitor_settings).
MONITOR_METRICS = "metrics.jsonl"
MONITOR_DECISIONS = "decisions.jsonl"


def monitor_settings(
    stack: str,
    status_port: int,
    workdir: Path,
    state_dir: Path,
    scale_command: list[str],
    **settings: object,
) -> dict[str, object]:
    """Settings of a monitor that watches `stack` and keeps its logs in `workdir` (metrics.jsonl,
    decisions.jsonl, scale-runs.log, state.json), not in the project's logs/; the scale lock and events it
    shares with the scale runs are in `state_dir` (their tenfold_state_dir)."""
    return {
        "stack": stack,
        "project_dir": str(ROOT),
        "lb_status_url": f"http://127.0.0.1:{status_port}/status",
        "stub_status_url": f"http://127.0.0.1:{status_port}/nginx_status",
        "state_dir": str(state_dir),
        "metrics_log": str(workdir / MONITOR_METRICS),
        "decisions_log": str(workdir / MONITOR_DECISIONS),
        "scale_log": str(workdir / "scale-runs.log"),
        "state_file": str(workdir / "state.json"),
        "scale_command": scale_command,
        **settings,
    }


class Monitor:
    """A monitor process for `stack`; its scale runs share the stack's work directory (lock, events).

    `code`: None for the installed monitor package, or another checkout's monitor/ directory, to compare
    with a version from before the package (its __main__ found its module_utils itself). Such a monitor runs
    that checkout's scale.yml with its ansible.cfg (its modules were not a collection yet), and both keep the
    scale lock and events in that checkout's logs/, where that monitor looks by default (it knows no
    state_dir)."""

    def __init__(self, stack: Stack, workdir: Path, code: Path | None = None, **settings: object) -> None:
        self.stack = stack
        self.workdir = workdir
        self.code = code
        workdir.mkdir(parents=True, exist_ok=True)
        self.metrics = workdir / MONITOR_METRICS
        self.config = workdir / "monitor.json"
        values = monitor_settings(
            stack.name, stack.status_port, workdir, stack.workdir, stack.scale_command(), **settings
        )
        if code:
            del values["state_dir"]
            values["project_dir"] = str(code.parent)
        self.config.write_text(json.dumps(values, indent=2) + "\n")
        self.proc: subprocess.Popen | None = None
        self._offset = 0

    def start(self) -> Monitor:
        code = self.code
        env = self.stack.env(
            **({"PYTHONPATH": str(code), "ANSIBLE_CONFIG": str(code.parent / "ansible.cfg")} if code else {})
        )
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
        return self

    def stop(self) -> None:
        """SIGTERM: the monitor lets a scale run in progress finish (up to 60 s), then exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def lines(self) -> list[dict]:
        return json_lines(self.metrics)

    def new_lines(self) -> list[tuple[float, dict]]:
        """Metrics lines written since the last call: (time this call read them, the line)."""
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

    def wait_for_lines(self, count: int, timeout: float) -> None:
        """Until the metrics log has `count` lines (bounded); fails with the monitor's stderr."""
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count:
            if time.monotonic() > deadline or self.exited:
                raise BenchError(f"the monitor wrote {len(self.lines())} metrics lines:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        found = ""
        for name in ("stderr.log", MONITOR_DECISIONS):
            path = self.workdir / name
            found += path.read_text(errors="replace")[-2000:] if path.exists() else ""
        return found
