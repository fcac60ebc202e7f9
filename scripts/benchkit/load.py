# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Bounded, paced HTTPS load through the LB that accounts for every request it sends.

Each worker thread has its own source address, cookie jar and keep-alive connection, and sends its share of
the rate to the paths it is given. It stops by itself after `max_seconds`, whatever happens.

A request counts as failed when the answer is not 2xx, or when the connection breaks: nothing is retried,
as many clients (http.client, pooled proxies, any POST) do not retry either. A keep-alive connection the LB
closed before answering is a failure like any other.

Every answer is kept (when, which instance answered, the outcome), so a bench can tell when a new replica
first served. `keepalive=False` opens a fresh connection per request instead, each worker cycling through
its share of the sources (a probe of new connections, as the scale bench sends).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it ended
    instance: str | None  # the app instance that answered (its JSON body's "instance")
    outcome: str  # "ok", "http <status>" or the exception's name


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    by_path: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class Worker(threading.Thread):
    def __init__(self, load: Load, sources: list[str], paths: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.load = load
        self.sources = itertools.cycle(sources)
        self.paths = paths
        self.interval = interval
        self.conn: http.client.HTTPSConnection | None = None
        self.cookies: dict[str, str] = {}
        self.cpu_s = 0.0

    def connect(self) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(
            self.load.host,
            self.load.port,
            timeout=self.load.timeout,
            source_address=(next(self.sources), 0),
            context=ctx,
        )

    def request(self, path: str) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = self.connect()
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        for key, value in response.getheaders():
            if key.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        if response.getheader("connection", "").lower() == "close" or not self.load.keepalive:
            self.conn.close()
            self.conn = None
        return response.status, body

    def run(self) -> None:
        cpu = time.thread_time()
        try:
            self.send()
        finally:
            self.cpu_s = time.thread_time() - cpu

    def send(self) -> None:
        index = 0
        next_at = time.monotonic()
        while not self.load.stopping.is_set() and time.monotonic() < self.load.deadline:
            path = self.paths[index % len(self.paths)]
            index += 1
            try:
                status, body = self.request(path)
                outcome = "ok" if 200 <= status < 300 else f"http {status}"
            except (OSError, http.client.HTTPException) as exc:
                outcome, body = type(exc).__name__, b""
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
            self.load.record(path, outcome, body)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.load.stopping.wait(delay)
            else:
                next_at = time.monotonic()
        if self.conn is not None:
            self.conn.close()


class Load:
    """`rate` requests/s in all, spread over `workers` threads cycling through `paths`."""

    def __init__(
        self,
        port: int,
        paths: list[str],
        rate: float = 120.0,
        workers: int = 12,
        sources: list[str] | None = None,
        max_seconds: float = 300.0,
        host: str = "127.0.0.1",
        timeout: float = 15.0,
        keepalive: bool = True,
    ) -> None:
        self.port = port
        self.host = host
        self.timeout = timeout
        self.keepalive = keepalive
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.tally = Tally()
        self.started = 0.0
        self.stopped = 0.0
        sources = sources or ["127.0.0.1"]
        interval = workers / rate
        self.workers = [
            Worker(
                self,
                # keep-alive: one source per worker; fresh connections: the worker's share of them, in turn
                sources[i::workers] if not keepalive and i < len(sources) else [sources[i % len(sources)]],
                paths[i % len(paths) :] + paths[: i % len(paths)],
                interval,
            )
            for i in range(workers)
        ]

    def record(self, path: str, outcome: str, body: bytes) -> None:
        instance = None
        if outcome == "ok" and body.startswith(b"{"):
            with contextlib.suppress(ValueError, AttributeError):
                instance = json.loads(body).get("instance")
        with self.lock:
            self.answers.append(Answer(time.monotonic(), instance, outcome))
            self.tally.sent += 1
            self.tally.by_path[path.split("?")[0]] += 1
            if outcome == "ok":
                self.tally.ok += 1
            else:
                self.tally.failures[f"{path.split('?')[0]}: {outcome}"] += 1

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.join(timeout=30)
        self.stopped = time.monotonic()

    def since(self, start: float, end: float = float("inf")) -> list[Answer]:
        """The answers that ended between `start` and `end` (time.monotonic())."""
        with self.lock:
            return [a for a in self.answers if start <= a.at <= end]

    def first_seen(self, since: float = 0.0) -> dict[str, float]:
        """When each instance first answered after `since` (time.monotonic())."""
        found: dict[str, float] = {}
        for answer in self.since(since):
            if answer.instance is not None:
                found.setdefault(answer.instance, answer.at)
        return found

    def wait_for_answer(self, timeout: float = 15.0) -> None:
        """Until some instance has answered (a probe is only worth starting on an LB that serves)."""
        deadline = time.monotonic() + timeout
        while not self.first_seen():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no answer from {self.host}:{self.port} in {timeout:g} s: {self.answers[-1:]}"
                )
            time.sleep(0.05)

    @property
    def cpu_share(self) -> float:
        """CPU time of the workers over the load's lifetime, in cores."""
        end = self.stopped or time.monotonic()
        return sum(w.cpu_s for w in self.workers) / max(end - self.started, 1e-9)

    @property
    def rate(self) -> float:
        end = self.stopped or time.monotonic()
        return self.tally.sent / max(end - self.started, 1e-9)
