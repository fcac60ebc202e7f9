# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The frontend app: an HTML page with a per-instance session, /whoami, static assets and /health.

Served by gunicorn with one aiohttp worker: gunicorn frontend_app:create_app
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from aiohttp import web
from tenfold_app.core import SessionStore, Settings, env_int
from tenfold_app.web import create_base_app, json_response, settings

COOKIE = "tenfold_session"
SESSIONS = "tenfold.sessions"
STATIC_DIR = Path(__file__).resolve().with_name("static")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tenfold</title>
<link rel="stylesheet" href="/static/app.css">
</head>
<body>
<main>
<h1>tenfold</h1>
<p>Served by <strong id="instance">{instance}</strong> (pool {pool}).</p>
<p>Visits in this session: <strong id="visits">{visits}</strong></p>
<p>API: <span id="api">asking /api/whoami&hellip;</span></p>
</main>
<script src="/static/app.js" defer></script>
</body>
</html>
"""


def visit(request: web.Request) -> tuple[str, int, bool]:
    """Count a visit of the request's session. Returns the session id, its visits and whether it is new."""
    return request.app[SESSIONS].visit(request.cookies.get(COOKIE))


def set_session_cookie(request: web.Request, response: web.Response, session_id: str) -> None:
    # Secure when the client came over HTTPS (the LB says so); plain HTTP still works for direct tests.
    response.set_cookie(
        COOKIE,
        session_id,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.headers.get("X-Forwarded-Proto") == "https",
    )


async def index(request: web.Request) -> web.Response:
    conf = settings(request)
    session_id, visits, is_new = visit(request)
    page = PAGE.format(instance=html.escape(conf.instance), pool=html.escape(conf.pool), visits=visits)
    response = web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})
    if is_new:
        set_session_cookie(request, response, session_id)
    return response


async def whoami(request: web.Request) -> web.Response:
    conf = settings(request)
    session_id, visits, is_new = visit(request)
    response = json_response(
        {"instance": conf.instance, "pool": conf.pool, "session": session_id, "visits": visits}
    )
    if is_new:
        set_session_cookie(request, response, session_id)
    return response


async def create_app() -> web.Application:
    app = create_base_app(Settings.from_env("frontend"))
    app[SESSIONS] = SessionStore(limit=env_int(os.environ, "MAX_SESSIONS", 100_000, minimum=1))
    app.router.add_get("/", index)
    app.router.add_get("/whoami", whoami)
    app.router.add_static("/static", STATIC_DIR)
    return app
