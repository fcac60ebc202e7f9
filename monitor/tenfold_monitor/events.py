# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The scale events the tenfold_scale_events callback writes, read back for the monitor's cooldown.

The file outlives the monitor, so a restarted monitor still knows when each pool was last scaled; its
rotation (roles/monitor, logrotate) keeps the newest rotated copy uncompressed, and it is read too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class ScaleEvent:
    end: float
    stack: str
    result: str
    trigger: str
    # pool -> (from, to), only the pools the run changed or meant to (every pool after a killed run)
    changes: dict[str, tuple[int, int]]


def _epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (AttributeError, TypeError, ValueError):
        return None


def parse(line: str) -> ScaleEvent | None:
    """One line of the events file, or None when it is not a well-formed event."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    end = _epoch(raw.get("end", ""))
    if end is None:
        return None
    # A run that took over the lock of a killed one (which recorded nothing) counts for every pool: the
    # killed run may have changed any of them before this one put them right.
    recovered = bool(raw.get("recovered_from"))
    changes = {}
    for pool in raw.get("pools") or []:
        if isinstance(pool, dict) and (recovered or pool.get("direction") in ("up", "down")):
            changes[str(pool.get("pool"))] = (int(pool.get("current", 0)), int(pool.get("target", 0)))
    return ScaleEvent(
        end=end,
        stack=str(raw.get("stack") or ""),
        result=str(raw.get("result") or ""),
        trigger=str(raw.get("trigger") or ""),
        changes=changes,
    )


def last_scaled(path: Path, stack: str, max_bytes: int = 1 << 20) -> dict[str, float]:
    """When each pool of `stack` was last scaled (any trigger, any result: a failed run disturbed it too).

    The newest rotated copy (`<name>.1`: logrotate renames the file and compresses it one rotation later)
    is read too, so a rotation right after a scale event does not end its cooldown."""
    found: dict[str, float] = {}
    for part in (rotated(path), path):
        for line in _tail(part, max_bytes).splitlines():
            event = parse(line)
            if event is None or event.stack != stack:
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
