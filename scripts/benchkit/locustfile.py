# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The load test's users, for locust in headless mode (scripts/load-test.sh starts them; docs/benchmarks.md).

- `SiteUser` (closed model): each user sends its next request as soon as the last one is answered, half
  `GET /` (frontend, with its session and route cookies) and half `GET /api/work?ms=20` (backend).
- `PacedUser` (approximately open model): the same requests, each user at most TENFOLD_LOAD_USER_RATE
  requests/s (locust's `constant_throughput`): users x rate is the offered rate while answers take less than
  1/rate seconds; slower answers hold a user back, and the per-second timeline then shows offered (what the
  users were told to send) above started.

Environment:
  TENFOLD_LOAD_SOURCES     comma-separated local addresses the connections are bound to, in turn (the
                           allowlisted load source, say 127.0.3.1,127.0.3.2); empty: the kernel's choice
  TENFOLD_LOAD_USER_RATE   requests/s of one PacedUser (default 1)
  TENFOLD_LOAD_SECONDS     where to write the per-second record (JSON lines; empty: none), see below
  TENFOLD_LOAD_PATHS       comma-separated paths the users cycle through (default "/,/api/work?ms=20")

The per-second record has one line per second of wall-clock time in which a request started or ended:
`{"t": <epoch second>, "started": n, "ok": n, "failed": n, "latencies_ms": [...], "users": n, "errors": {}}`
where `started` counts requests by the second they began, the others by the second they ended; `errors`
counts the failures by kind (`"http 429": n`, or the exception's name).
The start of the test (epoch seconds) goes to the same path plus ".start".
A request fails as locust counts it for FastHttpUser: an HTTP status of 400 or more, a timeout, a broken
connection.
"""

from __future__ import annotations

import itertools
import json
import os
import ssl
import time
from collections import defaultdict

import gevent
import gevent.socket
import gevent.ssl
from geventhttpclient.connectionpool import ConnectionPool
from locust import FastHttpUser, constant, constant_throughput, events, task

SOURCES = [s.strip() for s in os.environ.get("TENFOLD_LOAD_SOURCES", "").split(",") if s.strip()]
USER_RATE = float(os.environ.get("TENFOLD_LOAD_USER_RATE", "1") or 1)
SECONDS_FILE = os.environ.get("TENFOLD_LOAD_SECONDS", "")
PATHS = [p for p in os.environ.get("TENFOLD_LOAD_PATHS", "/,/api/work?ms=20").split(",") if p]
FLUSH_S = 2.0

if SOURCES:
    _next_source = itertools.cycle(SOURCES).__next__
    _plain_socket = ConnectionPool._create_tcp_socket

    def _bound_socket(self, family: int, socktype: int, protocol: int) -> gevent.socket.socket:
        """geventhttpclient's TCP socket factory (its documented override point), bound to a load source."""
        sock = _plain_socket(self, family, socktype, protocol)
        sock.bind((_next_source(), 0))
        return sock

    ConnectionPool._create_tcp_socket = _bound_socket


class _Seconds:
    """Per-second counts and latencies, appended to SECONDS_FILE every FLUSH_S and at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.buckets: dict[int, dict] = defaultdict(
            lambda: {"started": 0, "ok": 0, "failed": 0, "latencies_ms": [], "users": 0, "errors": {}}
        )
        self.users = 0
        self.flushed_until = 0

    def add(self, response_time_ms: float, error: str | None) -> None:
        now = time.time()
        end = self.buckets[int(now)]
        end["users"] = self.users
        end["failed" if error else "ok"] += 1
        if error:
            end["errors"][error] = end["errors"].get(error, 0) + 1
        end["latencies_ms"].append(round(response_time_ms, 2))
        self.buckets[int(now - response_time_ms / 1000.0)]["started"] += 1

    def flush(self, final: bool = False) -> None:
        # Keep the last 2 s until the end: a request still running may yet count as started in them.
        limit = float("inf") if final else int(time.time()) - 2
        done = sorted(t for t in self.buckets if t < limit)
        if not done:
            return
        with open(self.path, "a") as out:
            for t in done:
                out.write(json.dumps({"t": t, **self.buckets.pop(t)}, separators=(",", ":")) + "\n")


_seconds = _Seconds(SECONDS_FILE) if SECONDS_FILE else None


@events.request.add_listener
def _on_request(response_time, exception, response=None, **_kwargs) -> None:
    if _seconds is None:
        return
    error = None
    if exception is not None:
        status = getattr(response, "status_code", 0) or 0
        error = f"http {status}" if status else type(exception).__name__
    _seconds.add(response_time or 0.0, error)


@events.spawning_complete.add_listener
def _on_spawned(user_count, **_kwargs) -> None:
    if _seconds is not None:
        _seconds.users = user_count


@events.test_start.add_listener
def _on_start(environment, **_kwargs) -> None:
    if _seconds is None:
        return
    # When the users (and a shape's clock) started: the runner lines the timeline up on it.
    with open(SECONDS_FILE + ".start", "w") as out:
        out.write(f"{time.time():.3f}\n")

    def flusher() -> None:
        while True:
            gevent.sleep(FLUSH_S)
            if environment.runner is not None:
                _seconds.users = environment.runner.user_count
            _seconds.flush()

    gevent.spawn(flusher)


@events.quitting.add_listener
def _on_quit(**_kwargs) -> None:
    if _seconds is not None:
        _seconds.flush(final=True)


def _unverified_context(cafile: str | None = None) -> ssl.SSLContext:
    """A TLS context for the stack's self-signed certificate. geventhttpclient's default factory loads the
    CA bundle for every user (some 40 ms of CPU each), which alone would hold back a spawn of 1000 users by
    tens of seconds; nothing is verified here, so the bundle is not loaded."""
    return gevent.ssl._create_unverified_context()


class _Site(FastHttpUser):
    """The requests both user classes send, in turn."""

    abstract = True
    insecure = True  # the stack's certificate is self-signed
    ssl_context_factory = staticmethod(_unverified_context)
    connection_timeout = 10.0
    network_timeout = 30.0
    index = 0

    @task
    def get(self) -> None:
        path = PATHS[self.index % len(PATHS)]
        self.index += 1
        # One name per route, so locust's tables stay short.
        self.client.get(path, name=path.split("?", 1)[0])


class SiteUser(_Site):
    """Closed model: the next request as soon as the last is answered."""

    wait_time = constant(0)


class PacedUser(_Site):
    """At most USER_RATE requests/s per user (constant_throughput)."""

    wait_time = constant_throughput(USER_RATE)
