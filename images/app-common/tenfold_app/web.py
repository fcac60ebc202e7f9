# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""aiohttp pieces both apps use: JSON responses, the in-flight middleware and GET /health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from tenfold_app.core import Inflight, Settings

HEALTH_PATH = "/health"
SETTINGS = "tenfold.settings"
INFLIGHT = "tenfold.inflight"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response(dict(data), status=status, headers={"Cache-Control": "no-store"})


def json_error(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status=status)


def settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


@web.middleware
async def count_inflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == HEALTH_PATH:
        return await handler(request)
    with request.app[INFLIGHT]:
        return await handler(request)


async def health(request: web.Request) -> web.Response:
    conf = settings(request)
    return json_response(
        {
            "status": "ok",
            "instance": conf.instance,
            "pool": conf.pool,
            "inflight": request.app[INFLIGHT].count,
        }
    )


def create_base_app(conf: Settings) -> web.Application:
    """An application with the shared state, middleware and /health; each app adds its routes."""
    app = web.Application(middlewares=[count_inflight])
    app[SETTINGS] = conf
    app[INFLIGHT] = Inflight()
    app.router.add_get(HEALTH_PATH, health)
    return app
