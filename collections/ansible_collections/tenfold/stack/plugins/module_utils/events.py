# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Scale events: one JSON line per change of a pool's size, appended to the stack's events file.

The tenfold.stack.scale_events callback writes one for every scale.yml run, and the monitor one for every warm
replica it promotes itself (its fast path); the monitor reads them back for its cooldown, the status view
for its history. One shape for all of them, built here. Standard library only: the callback and the
monitor import it outside Ansible's module loader.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any


def iso(ts: float) -> str:
    """Epoch seconds as the events file writes them: 2026-12-06T05:22:08.123Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(
    *,
    start: float,
    end: float,
    trigger: str,
    stack: str | None,
    request: dict[str, Any],
    pools: list[dict[str, Any]],
    result: str,
    failed_task: str | None = None,
    error: str | None = None,
    recovered_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One event. `pools` as tenfold.stack.scale_plan returns them: pool, current, target, direction,
    message."""
    record = {
        "start": iso(start),
        "end": iso(end),
        "duration_s": round(end - start, 3),
        "trigger": trigger,
        "stack": stack,
        "request": request,
        "pools": pools,
        "result": result,
        "failed_task": failed_task,
        "error": error,
    }
    if recovered_from:
        record["recovered_from"] = recovered_from  # the killed run whose lock this one took
    return record


def append(path: str, record: dict[str, Any]) -> None:
    """Append one event as a line (one write, so concurrent writers do not interleave within a line)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
