# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The Docker host's own CPU and memory, with psutil."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

MIN_CPU_INTERVAL_S = 0.1  # below this, psutil's figure is mostly rounding


@dataclass(frozen=True)
class HostMetrics:
    cpu_percent: float | None  # all CPUs together, 0-100, since the previous sample; None: too soon to say
    memory_percent: float  # of physical memory, psutil's virtual_memory().percent (reclaimable left out)


class HostSampler:
    """Non-blocking host samples: CPU use is measured between two calls, as psutil.cpu_percent(None) does.

    Making the sampler makes psutil's first call (whose 0.0 means nothing); a `sample()` taken less than
    MIN_CPU_INTERVAL_S after the previous call has no CPU figure.
    """

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)
        self._last = time.monotonic()

    def sample(self) -> HostMetrics:
        now = time.monotonic()
        cpu = float(psutil.cpu_percent(interval=None))
        enough = now - self._last >= MIN_CPU_INTERVAL_S
        self._last = now
        return HostMetrics(
            cpu_percent=cpu if enough else None,
            memory_percent=float(psutil.virtual_memory().percent),
        )
