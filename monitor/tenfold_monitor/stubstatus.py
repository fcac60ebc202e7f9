# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""nginx's stub_status page: connections now, and a request rate from two samples.

Active connections: 291
server accepts handled requests
 16630948 16630948 31070465
Reading: 6 Writing: 179 Waiting: 106
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

_ACTIVE_RE = re.compile(r"Active connections:\s*(\d+)")
_COUNTERS_RE = re.compile(r"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)")
_STATES_RE = re.compile(r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


@dataclass(frozen=True)
class StubStatus:
    active: int
    accepts: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int


def parse(text: str) -> StubStatus:
    """The figures of a stub_status page; ValueError when the text is not one."""
    active, counters, states = _ACTIVE_RE.search(text), _COUNTERS_RE.search(text), _STATES_RE.search(text)
    if not (active and counters and states):
        raise ValueError(f"not an nginx stub_status page: {text[:80]!r}")
    accepts, handled, requests = (int(n) for n in counters.groups())
    reading, writing, waiting = (int(n) for n in states.groups())
    return StubStatus(int(active.group(1)), accepts, handled, requests, reading, writing, waiting)


def request_rate(previous: StubStatus, current: StubStatus, elapsed_s: float) -> float | None:
    """Requests per second between two samples `elapsed_s` apart.

    None when no time passed or the counter went back (nginx restarted: its counters start again at 0;
    a reload keeps them).
    """
    if elapsed_s <= 0 or current.requests < previous.requests:
        return None
    return (current.requests - previous.requests) / elapsed_s


def fetch(url: str, timeout: float = 1.0) -> str:
    """The page at `url` (http://127.0.0.1:<status port>/nginx_status); OSError when it does not answer."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read(64 << 10).decode("ascii", "replace")
