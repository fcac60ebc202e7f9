# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The backend app: a JSON API under /api/ with I/O-bound work behind a per-instance concurrency limit.

Served by gunicorn with one aiohttp worker: gunicorn backend_app:create_app
"""

from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web
from tenfold_app.core import Settings, env_int, parse_ms
from tenfold_app.web import create_base_app, json_error, json_response, settings

LIMIT = "tenfold.limit"
MAX_WORK_MS = 10_000


async def whoami(request: web.Request) -> web.Response:
    conf = settings(request)
    return json_response({"instance": conf.instance, "pool": conf.pool})


async def work(request: web.Request) -> web.Response:
    """Simulate I/O-bound work of `ms` milliseconds; beyond MAX_CONCURRENCY, requests wait in line."""
    try:
        ms = parse_ms(request.query.get("ms"), MAX_WORK_MS)
    except ValueError as exc:
        return json_error(400, str(exc))
    arrived = time.monotonic()
    async with request.app[LIMIT]:
        queued_ms = round((time.monotonic() - arrived) * 1000)
        await asyncio.sleep(ms / 1000)
    return json_response({"instance": settings(request).instance, "ms": ms, "queued_ms": queued_ms})


async def create_app() -> web.Application:
    app = create_base_app(Settings.from_env("backend"))
    app[LIMIT] = asyncio.Semaphore(env_int(os.environ, "MAX_CONCURRENCY", 32, minimum=1))
    app.router.add_get("/api/whoami", whoami)
    app.router.add_get("/api/work", work)
    return app
