# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""gunicorn settings of both apps: ONE aiohttp worker, so in-memory session data is per instance."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = 1
worker_class = "aiohttp.GunicornWebWorker"
# On SIGTERM the worker stops accepting connections (health checks fail, the LB moves on) and gives the
# requests in flight this many seconds; keep it below the container's stop timeout (app_pools: 30 s).
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))
# Seconds without a heartbeat from the worker before the master replaces it.
timeout = 30
# Idle keep-alive connections stay open longer than nginx keeps idle upstream connections (60 s), so nginx
# never reuses a connection the app is closing.
keepalive = 75
# The root filesystem is read-only: the worker's heartbeat file lives in memory.
worker_tmp_dir = "/dev/shm"
# Access logs are nginx's job; set ACCESS_LOG=1 to log requests here as well.
accesslog = "-" if os.environ.get("ACCESS_LOG") == "1" else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
