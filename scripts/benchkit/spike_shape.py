# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The spike's shape for locust: how many users run when (scripts/load-test.sh spike passes it with -f).

TENFOLD_LOAD_STAGES is a JSON list of [end_s, users]: from the previous stage's end until end_s seconds
after the start, `users` users run; after the last stage the run stops. Users start (or stop) at
TENFOLD_LOAD_SPAWN_RATE per second (default: all at once within a second).
"""

from __future__ import annotations

import json
import os

from locust import LoadTestShape

STAGES = [(float(end), int(users)) for end, users in json.loads(os.environ.get("TENFOLD_LOAD_STAGES", "[]"))]
SPAWN_RATE = float(os.environ.get("TENFOLD_LOAD_SPAWN_RATE", "0") or 0)


class StagedShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        for end, users in STAGES:
            if elapsed < end:
                return users, SPAWN_RATE or float(max(users for _, users in STAGES))
        return None
