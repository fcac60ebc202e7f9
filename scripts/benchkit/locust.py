# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""One headless locust run with the harness's users (locustfile.py): its per-second record and its log."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchkit.host import ROOT, BenchError, children_cpu, run_logged, tool

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
SHAPEFILE = HERE / "spike_shape.py"


def locust_version() -> str:
    try:
        return version("locust")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class LocustRun:
    """locust against `host` with users bound to `sources` in turn, cycling through `paths` (comma-separated).
    Its per-second record is `<name>.seconds.jsonl` in `workdir` (benchkit.stats.read_seconds reads it)."""

    workdir: Path
    name: str
    host: str
    sources: list[str]
    paths: str
    env: dict[str, str] = field(default_factory=dict)
    cpu_s: float = 0.0  # CPU time (user + system) locust used in the last run

    @property
    def seconds_file(self) -> Path:
        return self.workdir / f"{self.name}.seconds.jsonl"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.locust.log"

    def run(self, args: Sequence[str], limit_s: float, shape: bool = False) -> float:
        """Run locust to the end (it stops itself; stopped after `limit_s`); returns its start (epoch s).
        `shape`: the users follow TENFOLD_LOAD_STAGES (spike_shape.py) instead of -u/-t."""
        started = Path(f"{self.seconds_file}.start")
        for stale in (self.seconds_file, started):
            stale.unlink(missing_ok=True)
        env = {
            **os.environ,
            **self.env,
            "TENFOLD_LOAD_SOURCES": ",".join(self.sources),
            "TENFOLD_LOAD_SECONDS": str(self.seconds_file),
            "TENFOLD_LOAD_PATHS": self.paths,
        }
        files = f"{LOCUSTFILE},{SHAPEFILE}" if shape else str(LOCUSTFILE)
        options = ["--headless", "--host", self.host, "--only-summary", "--exit-code-on-error", "0"]
        options += ["--stop-timeout", "2", "--loglevel", "WARNING"]
        cpu0 = children_cpu()
        rc = run_logged([tool("locust"), "-f", files, *args, *options], self.log, limit_s, cwd=ROOT, env=env)
        self.cpu_s = children_cpu() - cpu0
        if rc != 0 or not started.exists():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"locust exited {rc} (log: {self.log}):\n{tail}")
        return float(started.read_text())

    def users(self, user_class: str, users: int, seconds: float) -> float:
        """`users` users of `user_class`, all started in the first second, for `seconds`."""
        count = str(users)
        return self.run([user_class, "-u", count, "-r", count, "-t", f"{seconds:g}s"], limit_s=seconds + 90)
