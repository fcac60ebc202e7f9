# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The scale events the tenfold.stack.scale_events callback writes, read back for the monitor's cooldown and
for the status view (tenfold_monitor.status).

The file outlives the monitor, so a restarted monitor still knows when each pool was last scaled; its
rotation (roles/monitor, logrotate) keeps the newest rotated copy uncompressed, and it is read too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PoolChange:
    pool: str
    current: int
    target: int
    direction: str | None = None  # "up", "down", "none" (tenfold.stack.scale_plan's); None when not recorded


@dataclass(frozen=True)
class ScaleEvent:
    """One scale run, as the callback (the collection's module_utils events) writes it. The one reader of
    the schema: the monitor's cooldown and tenfold_monitor.status both parse events here."""

    start: str
    end: float | None  # epoch seconds; None when the line has no readable end
    trigger: str
    stack: str
    result: str
    duration_s: float | None
    pools: list[PoolChange] = field(default_factory=list)
    requested_pool: str | None = None  # None: the request named no pool (all pools)
    failed_task: str | None = None
    error: str | None = None
    # the run took over the lock of a killed one, which recorded nothing
    recovered: bool = False

    @property
    def changes(self) -> dict[str, tuple[int, int]]:
        """pool -> (from, to) of the pools the run changed or meant to. A run that recovered a killed one's
        lock counts for every pool: the killed run may have changed any of them before this one put them
        right."""
        return {
            change.pool: (change.current, change.target)
            for change in self.pools
            if self.recovered or change.direction in ("up", "down")
        }


def _epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (AttributeError, TypeError, ValueError):
        return None


def as_count(value: Any) -> int | None:
    """A whole number of 0 or more from JSON or a label (an int, or a string of digits); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _pool_change(raw: Any) -> PoolChange | None:
    if not isinstance(raw, dict):
        return None
    current, target = as_count(raw.get("current")), as_count(raw.get("target"))
    if not isinstance(raw.get("pool"), str) or current is None or target is None:
        return None
    direction = raw.get("direction")
    return PoolChange(raw["pool"], current, target, direction if isinstance(direction, str) else None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse(line: str) -> ScaleEvent | None:
    """One line of the events file, or None when it is not an event (not a JSON object with a stack).
    Malformed parts of an event are left out (a pool entry) or None (a duration)."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("stack"), str):
        return None
    pools = raw.get("pools") if isinstance(raw.get("pools"), list) else []
    duration = raw.get("duration_s")
    request = raw.get("request") if isinstance(raw.get("request"), dict) else {}
    return ScaleEvent(
        start=str(raw.get("start") or ""),
        end=_epoch(raw.get("end", "")),
        trigger=str(raw.get("trigger") or "?"),
        stack=raw["stack"],
        result=str(raw.get("result") or "?"),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        pools=[change for change in map(_pool_change, pools) if change is not None],
        requested_pool=str(request["pool"]) if request.get("pool") else None,
        failed_task=_text(raw.get("failed_task")),
        error=_text(raw.get("error")),
        recovered=bool(raw.get("recovered_from")),
    )


def read(lines: Iterable[str], stack: str) -> list[ScaleEvent]:
    """The stack's events, oldest first; blank and malformed lines are skipped."""
    events = (parse(line) for line in lines if line.strip())
    return [event for event in events if event is not None and event.stack == stack]


def last_scaled(path: Path, stack: str, max_bytes: int = 1 << 20) -> dict[str, float]:
    """When each pool of `stack` was last scaled (any trigger, any result: a failed run disturbed it too).

    The newest rotated copy (`<name>.1`: logrotate renames the file and compresses it one rotation later)
    is read too, so a rotation right after a scale event does not end its cooldown."""
    found: dict[str, float] = {}
    for part in (rotated(path), path):
        for event in read(_tail(part, max_bytes).splitlines(), stack):
            if event.end is None:
                continue
            for pool in event.changes:
                found[pool] = max(found.get(pool, 0.0), event.end)
    return found


def rotated(path: Path) -> Path:
    """The newest rotated copy of the events file."""
    return path.with_name(path.name + ".1")


def _tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a file ("" when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
