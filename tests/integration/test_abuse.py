"""Abuse from one address (a request flood, too many connections, slow clients, oversized bodies) while
another address stays served.

The limits are the LB's (roles/nginx_lb/templates/nginx.conf.j2): limit_req zones general (/api/) and ddos
(every proxied location), limit_conn perip, client_header_timeout, client_body_timeout and
client_max_body_size, read from the stack's settings. Each attack is bounded in count and time and closes its
sockets in `finally`. Attackers and bystander have addresses of their own in 127.0.66.0/24 (not allowlisted).
"""

from __future__ import annotations

import collections
import http.client
import io
import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field

import pytest
from helpers import (
    assert_lb_error_page,
    nginx_bytes,
    nginx_seconds,
    read_response,
    unverified_context,
    wait_for,
)

pytestmark = pytest.mark.integration

BYSTANDER = "127.0.66.2"


@dataclass
class Bystander:
    """Another address asking /api/whoami every `interval` s while an attack runs (at most `limit` times)."""

    stack: object
    interval: float = 0.12
    limit: int = 300
    statuses: list = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, daemon=True)

    def _ask(self) -> None:
        client = self.stack.client(source=BYSTANDER)
        while not self._stop.is_set() and len(self.statuses) < self.limit:
            started = time.monotonic()
            try:
                status = client.get("/api/whoami", timeout=10).status
            except (OSError, http.client.HTTPException) as error:
                status = repr(error)
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)
            self._stop.wait(self.interval)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def assert_served(self) -> None:
        assert self.statuses, "the bystander never asked"
        assert set(self.statuses) == {200}, f"bystander got {self.statuses}"

    def record(self, figures, attack: str) -> None:
        ms = [latency * 1000 for latency in self.latencies]
        figures.record(
            "Abuse", f"bystander latency during {attack}, median", round(statistics.median(ms), 1), "ms"
        )
        figures.record(
            "Abuse",
            f"bystander latency during {attack}, max",
            round(max(ms), 1),
            "ms",
            note=f"{len(ms)} requests",
        )


@dataclass
class Raw:
    """A connection the test writes to by hand; `poll` reads without waiting and notes when the LB cut it."""

    sock: socket.socket
    opened: float
    received: bytes = b""
    closed_at: float | None = None
    # How the LB ended it: "close" (an orderly end) or the error the socket raised (SSLEOFError, ...).
    ended_by: str = ""

    @classmethod
    def open(cls, stack, source: str, tls: bool = True) -> Raw:
        opened = time.monotonic()  # before the connect: the LB's timers start at its accept
        sock = socket.create_connection(
            ("127.0.0.1", stack.https_port), timeout=10, source_address=(source, 0)
        )
        if tls:
            # The handshake happens here. Ragged EOFs raise, so a close without close_notify and a reset show.
            try:
                sock = unverified_context().wrap_socket(
                    sock, server_hostname="localhost", suppress_ragged_eofs=False
                )
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        return cls(sock, opened)

    @property
    def cut(self) -> bool:
        return self.closed_at is not None

    def poll(self) -> None:
        if self.cut:
            return
        try:
            while data := self.sock.recv(65536):
                self.received += data
            self.ended("close")
        except (ssl.SSLWantReadError, BlockingIOError):
            pass  # nothing more yet (a TLS 1.3 session ticket alone is no application data)
        except OSError as error:
            self.ended(type(error).__name__)  # a close without close_notify (SSLEOFError), a reset, an alert

    def ended(self, how: str) -> None:
        self.closed_at = time.monotonic()
        self.ended_by = how

    def send(self, data: bytes) -> None:
        if self.cut:
            return
        try:
            self.sock.settimeout(10)
            self.sock.sendall(data)
        except OSError as error:
            self.ended(type(error).__name__)
        finally:
            self.sock.setblocking(False)

    def response(self):
        """The response received so far if it is complete, else None."""
        if b"\r\n\r\n" not in self.received:
            return None
        raw = http.client.HTTPResponse(_Received(self.received), method="POST")
        try:
            raw.begin()
            return read_response(raw)
        except http.client.IncompleteRead:
            return None

    def wait_for_response(self, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()
            if (response := self.response()) is not None or self.cut:
                return response
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self.sock.close()


class _Received:
    """What http.client needs of a socket, over bytes already received."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def ended_by(connections: list[Raw]) -> str:
    return ", ".join(f"{how} x{n}" for how, n in collections.Counter(c.ended_by for c in connections).items())


def poll_for(connections: list[Raw], seconds: float, answered: int) -> None:
    """Poll until `answered` of them have received something, then 0.5 s more; `seconds` at most."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for conn in connections:
            conn.poll()
        if sum(bool(c.received) for c in connections) >= answered:
            deadline = min(deadline, time.monotonic() + 0.5)
        time.sleep(0.05)


def poll_until_cut(connections: list[Raw], seconds: float, between=None) -> None:
    """Poll every 0.1 s until all are cut or `seconds` pass; `between()` runs once a second meanwhile."""
    deadline = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < deadline and not all(c.cut for c in connections):
        for conn in connections:
            conn.poll()
        if between is not None and time.monotonic() >= next_tick:
            between()
            next_tick += 1.0
        time.sleep(0.1)


def test_flood_from_one_address_gets_429_after_its_burst_while_another_is_served(stack, figures):
    burst = int(stack.setting("nginx_lb", "nginx_lb_rate_general_burst"))
    flooder = stack.client(source="127.0.66.10")
    statuses: list[int] = []
    first_limited = None
    started = time.monotonic()
    with Bystander(stack) as bystander:
        while len(statuses) < 600 and time.monotonic() - started < 2:
            response = flooder.get("/api/whoami")
            statuses.append(response.status)
            if response.status == 429 and first_limited is None:
                first_limited = response
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}, statuses
    assert first_limited is not None, (
        f"{len(statuses)} back-to-back requests from one address were never limited"
    )
    assert_lb_error_page(first_limited, 429, "Too Many Requests")
    served_first = statuses.index(429)
    # The burst is served at once, and nothing beyond it and the rate's trickle since.
    rate = int(stack.setting("nginx_lb", "nginx_lb_rate_general"))
    assert burst <= served_first <= burst + 1 + rate * elapsed, statuses
    bystander.assert_served()

    figures.record(
        "Abuse", "flood: requests served before the first 429", served_first, note=f"burst {burst}"
    )
    figures.record(
        "Abuse",
        "flood: requests answered 429",
        f"{statuses.count(429)} of {len(statuses)}",
        note=f"{len(statuses) / elapsed:.0f} requests/s from one address for {elapsed:.1f} s",
    )
    bystander.record(figures, "the flood")


def test_allowlisted_address_is_not_limited(stack):
    trusted = stack.client(source="127.0.0.9")
    assert {trusted.get("/api/whoami").status for _ in range(60)} == {200}


def test_eleventh_concurrent_connection_from_one_address_is_refused(stack):
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(11)

    def slow_request():
        client = stack.client(source="127.0.0.4")
        start.wait()
        status = client.get("/api/work?ms=2000").status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=slow_request) for _ in range(11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] * 10 + [429]


# A request header that never ends: slowloris sends it a byte at a time.
SLOW_HEADER = (
    b"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\nX-Padding: " + b"a" * 200
)


def test_connections_past_the_per_address_bound_are_refused_before_nginx_reads_a_byte(stack, figures):
    # Idle TCP connections: no TLS, no request. nginx's limit_conn never sees them; the kernel counts them.
    bound = int(stack.setting("nginx_lb", "nginx_lb_conn_limit_per_address"))
    attacker = "127.0.66.40"
    held: list[socket.socket] = []
    refused = 0
    try:
        with Bystander(stack) as bystander:
            for _ in range(bound + 5):
                try:
                    held.append(
                        socket.create_connection(
                            ("127.0.0.1", stack.https_port), timeout=5, source_address=(attacker, 0)
                        )
                    )
                except ConnectionRefusedError:  # the TCP reset
                    refused += 1
            started = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                stack.client(source=attacker).get("/health")  # its slots are all taken, even for a request
            refusal_s = time.monotonic() - started
    finally:
        for conn in held:
            conn.close()
    assert (len(held), refused) == (bound, 5)
    bystander.assert_served()
    # Closed, they free their slots at once.
    assert wait_for(lambda: stack.client(source=attacker).get("/health").status == 200, timeout=10)
    figures.record(
        "Abuse",
        "idle connections from one address: held / refused",
        f"{len(held)} / {refused}",
        note=f"nginx_lb_conn_limit_per_address {bound}, refused by the kernel with a TCP reset",
    )
    figures.record(
        "Abuse", "idle connections: a request past the bound refused in", round(refusal_s * 1000, 1), "ms"
    )
    bystander.record(figures, "the idle connections")


def test_slow_headers_are_cut_by_client_header_timeout_not_counted_by_limit_conn(stack, figures):
    timeout = nginx_seconds(stack.setting("nginx_lb", "nginx_lb_client_header_timeout"))
    attacker = "127.0.66.20"
    slow: list[Raw] = []
    silent: list[Raw] = []
    sent = 0
    own_requests: list[int] = []

    def drip():
        nonlocal sent
        for conn in slow:
            conn.send(SLOW_HEADER[sent : sent + 1])
        sent += 1
        if sent == 3:
            # The attacker's own complete request is served meanwhile: limit_conn counts a connection only
            # once its request header is read, so the slow ones hold none of the address's slots.
            own_requests.append(stack.client(source=attacker).get("/api/whoami").status)

    try:
        with Bystander(stack) as bystander:
            slow.extend(Raw.open(stack, attacker) for _ in range(40))
            # And connections that never even start the TLS handshake.
            silent.extend(Raw.open(stack, attacker, tls=False) for _ in range(5))
            poll_until_cut(slow + silent, timeout + 10, between=drip)
    finally:
        for conn in slow + silent:
            conn.close()

    assert all(c.cut for c in slow + silent), f"{sum(not c.cut for c in slow + silent)} still open"
    assert not any(c.received for c in slow + silent), "the LB answered a request it never got"
    after = sorted(c.closed_at - c.opened for c in slow + silent)
    assert after[0] >= timeout - 0.5, (
        f"cut after {after[0]:.1f} s, before client_header_timeout ({timeout} s)"
    )
    assert sent < len(SLOW_HEADER), "the header was complete: nothing slow about it"
    assert own_requests == [200]
    bystander.assert_served()

    figures.record(
        "Abuse",
        "slow headers: connections cut",
        f"{len(after)} of {len(after)}",
        note=("40 sending a header a byte a second, 5 never starting TLS; one address"),
    )
    figures.record(
        "Abuse",
        "slow headers: cut after (first / last)",
        f"{after[0]:.1f} / {after[-1]:.1f}",
        "s",
        note=f"client_header_timeout {timeout:g} s, counted from connect; no response, ended by "
        + ended_by(slow + silent),
    )
    figures.record(
        "Abuse",
        "slow headers: the attacker's own request meanwhile",
        own_requests[0],
        note="limit_conn does not count a connection until its header is read",
    )
    bystander.record(figures, "the slow headers")


def test_slow_bodies_hold_at_most_the_conn_limit_and_are_cut_by_client_body_timeout(stack, figures):
    extra = 5  # connections beyond the limit
    limit = int(stack.setting("nginx_lb", "nginx_lb_conn_limit"))
    timeout = nginx_seconds(stack.setting("nginx_lb", "nginx_lb_client_body_timeout"))
    attacker = "127.0.66.30"
    header = b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
    connections: list[Raw] = []
    try:
        with Bystander(stack) as bystander:
            for _ in range(limit + extra):
                conn = Raw.open(stack, attacker)
                connections.append(conn)
                conn.send(header)
            # limit_conn counts each once its header is read: those past the limit get 429 before any body.
            poll_for(connections, 5, answered=extra)
            refused = [c for c in connections if c.received]
            held = [c for c in connections if not c.received and not c.cut]
            own = stack.client(source=attacker).get("/api/whoami")
            # The held ones send a byte a second for 3 s, then stop: client_body_timeout runs between reads.
            for second in range(3):
                if second:
                    time.sleep(1)
                for conn in held:
                    conn.send(b"x")
            last_byte = time.monotonic()
            poll_until_cut(held, timeout + 10)
    finally:
        for conn in connections:
            conn.close()

    assert len(held) == limit, f"{len(held)} held, {len(refused)} refused of {len(connections)}"
    assert len(refused) == extra
    for conn in refused:
        assert_lb_error_page(conn.response(), 429, "Too Many Requests")
    assert own.status == 429, "the address's slots were not all taken"
    assert all(c.cut for c in held), f"{sum(not c.cut for c in held)} still open"
    assert not any(c.received for c in held)
    after = sorted(c.closed_at - last_byte for c in held)
    assert after[0] >= timeout - 0.5, f"cut {after[0]:.1f} s after the last byte, before client_body_timeout"
    bystander.assert_served()

    figures.record(
        "Abuse",
        "slow bodies: held / refused 429 at once",
        f"{len(held)} / {len(refused)}",
        note=f"of {len(connections)} from one address; limit_conn {limit}",
    )
    figures.record(
        "Abuse",
        "slow bodies: cut after the last byte (first / last)",
        f"{after[0]:.1f} / {after[-1]:.1f}",
        "s",
        note=f"client_body_timeout {timeout:g} s, between reads; no response, ended by {ended_by(held)}",
    )
    bystander.record(figures, "the slow bodies")


def test_oversized_declared_body_gets_413_before_any_of_it_is_sent(stack, figures):
    limit = nginx_bytes(stack.setting("nginx_lb", "nginx_lb_client_max_body_size"))
    conn = Raw.open(stack, "127.0.66.40")
    try:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % (limit + 1))
        sent = time.monotonic()
        response = conn.wait_for_response(10)
        answered = time.monotonic() - sent
    finally:
        conn.close()
    assert response is not None, "no answer to a declared body over client_max_body_size"
    assert_lb_error_page(response, 413, "Request Entity Too Large")
    figures.record(
        "Abuse",
        "413 for a declared Content-Length over the limit, after",
        round(answered * 1000, 1),
        "ms",
        note="the header alone: nginx does not read the body first",
    )


def test_oversized_chunked_body_gets_413_once_the_limit_is_read(stack, figures):
    limit = nginx_bytes(stack.setting("nginx_lb", "nginx_lb_client_max_body_size"))
    chunk = b"x" * 65536
    conn = Raw.open(stack, "127.0.66.41")
    body_sent = 0
    try:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        started = time.monotonic()
        # At most twice the limit, for at most 20 s, until the LB answers.
        while body_sent < 2 * limit and time.monotonic() - started < 20 and not conn.cut:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            body_sent += len(chunk)
            conn.poll()
            if b"\r\n\r\n" in conn.received:
                break
        answered = time.monotonic() - started
        response = conn.wait_for_response(5)
    finally:
        conn.close()
    assert response is not None, f"no answer after {body_sent} bytes of chunked body"
    assert_lb_error_page(response, 413, "Request Entity Too Large")
    # A chunked body declares no length: nginx counts its bytes as it reads them, and refuses past the limit.
    assert body_sent > limit
    figures.record(
        "Abuse",
        "413 for a chunked body over the limit, after",
        round(answered, 2),
        "s",
        note=f"{body_sent / (1 << 20):.1f} MiB sent by then (limit {limit / (1 << 20):g} MiB): nginx reads "
        "a chunked body up to the limit",
    )
