# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Acting on a decision: run `ansible-playbook scale.yml` in the background, one run at a time."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    pool: str
    replicas: int
    returncode: int
    seconds: float
    log_path: Path


class Actuator:
    """Starts scale runs without waiting for them, and never two at once.

    `command` is the argv prefix, e.g. [".venv/bin/ansible-playbook", "scale.yml", "-e", "@vars.yml"]; each
    run appends `-e pool=P -e replicas=N -e expect_current=C -e trigger=monitor`: C is the size the decision
    was made on, so a run that waited for the lock behind another changes nothing if that one moved the
    pool. Docker hosts the monitor cannot reach are left out (`--limit all:!HOST`): the run places the
    pool over the others instead of failing on a lost host. Its output goes to `log_path`.
    """

    def __init__(self, command: Sequence[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None):
        self.command = list(command)
        self.cwd = cwd
        self.log_path = log_path
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._job: tuple[str, int, float] | None = None

    def busy(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, pool: str, replicas: int, current: int, leave_out: Sequence[str] = ()) -> bool:
        """Start a scale run from `current` to `replicas`; False (nothing started) while another runs."""
        if self.busy():
            return False
        argv = [
            *self.command,
            *("-e", f"pool={pool}", "-e", f"replicas={replicas}", "-e", f"expect_current={current}"),
            *("-e", "trigger=monitor"),
        ]
        if leave_out:
            argv += ["--limit", ":".join(["all", *(f"!{host}" for host in leave_out)])]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(argv)}\n")
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._job = (pool, replicas, time.monotonic())
        return True

    def poll(self) -> Finished | None:
        """The run that has just finished, once; None while it runs or when there is none."""
        if self._proc is None or self._proc.poll() is None or self._job is None:
            return None
        pool, replicas, started = self._job
        done = Finished(pool, replicas, self._proc.returncode, time.monotonic() - started, self.log_path)
        self._proc = None
        self._job = None
        return done

    def stop(self, timeout: float = 60.0) -> None:
        """Let a run in progress finish (bounded), so a scale run is not cut in half."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                self._proc.wait(timeout=10)
