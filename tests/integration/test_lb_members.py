"""The LB's members API and Lua balancer, through the stack's real nginx and its real replicas.

Each test that changes a pool's members puts them back (as scale.yml would have them) before it ends.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest
from conftest import members_restored, plain, put
from helpers import access_log, backend_entries, playbook, wait_for

pytestmark = pytest.mark.integration


def state_file(stack) -> Path:
    return Path(f"/var/lib/tenfold/{stack.name}/lb/members.json")


def instance(response) -> str:
    return response.json()["instance"]


def in_background(fn, *args):
    """Run fn(*args) in a thread; the returned list holds its result once the thread is joined."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    thread.start()
    return thread, out


# --- bad input --------------------------------------------------------------------------------------------
def member(**changes) -> dict:
    return {"id": "tenfoldit-backend-9", "address": "127.0.0.1", "port": 28209, "state": "active", **changes}


def body(*members, generation="G", **extra) -> dict:
    """A write's body; generation "G" is the pool's current one, "G-1" the one before."""
    return {"generation": generation, "members": list(members), **extra}


BACKEND = "/members/backend"
BAD_WRITES = [
    ("not-json", "PUT", BACKEND, "nope", 400, "the body is not JSON"),
    ("not-an-object", "PUT", BACKEND, "[1, 2]", 400, "the body must be a JSON object"),
    ("no-generation", "PUT", BACKEND, {"members": []}, 400, "generation: null must be the whole"),
    ("generation-not-whole", "PUT", BACKEND, body(generation=1.5), 400, "generation: 1.5"),
    ("unknown-field", "PUT", BACKEND, body(weight=2), 400, 'unknown field "weight"'),
    ("members-not-a-list", "PUT", BACKEND, {"generation": "G", "members": {"a": 1}}, 400, "must be a list"),
    ("member-not-an-object", "PUT", BACKEND, body("x"), 400, "members[1]: must be an object"),
    ("bad-address", "PUT", BACKEND, body(member(address="1.2.3")), 400,
     'members[1].address: "1.2.3" must be an IPv4 address'),
    ("address-octet", "PUT", BACKEND, body(member(address="127.0.0.300")), 400, "must be an IPv4 address"),
    ("host-name", "PUT", BACKEND, body(member(address="evil.example")), 400, "must be an IPv4 address"),
    ("bad-port", "PUT", BACKEND, body(member(port=70000)), 400,
     "members[1].port: 70000 must be a whole number from 1 to 65535"),
    ("port-as-text", "PUT", BACKEND, body(member(port="28209")), 400, "members[1].port"),
    ("unknown-state", "PUT", BACKEND, body(member(state="gone")), 400,
     'members[1].state: "gone" must be "active" or "draining"'),
    ("bad-id", "PUT", BACKEND, body(member(id="a b;")), 400, "members[1].id"),
    ("duplicate-id", "PUT", BACKEND, body(member(), member(port=28208)), 400,
     'members[2].id: "tenfoldit-backend-9" is listed twice'),
    ("duplicate-endpoint", "PUT", BACKEND, body(member(), member(id="other")), 400,
     "127.0.0.1:28209 is listed twice"),
    ("unknown-member-field", "PUT", BACKEND, body(member(weight=5)), 400,
     'members[1]: unknown field "weight"'),
    ("stale-generation", "PUT", BACKEND, body(member(), generation="G-1"), 409,
     "is stale: the pool is at generation"),
    ("unknown-pool", "PUT", "/members/admin", body(generation=0), 404, "no pool admin"),
    ("post", "POST", BACKEND, body(), 405, "POST is not allowed"),
    ("put-without-pool", "PUT", "/members", body(), 405, "PUT names the pool"),
    ("too-large", "PUT", BACKEND, "x" * 70000, 413, "413"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [case[1:] for case in BAD_WRITES],
    ids=[case[0] for case in BAD_WRITES],
)
def test_a_malformed_member_write_is_refused_and_changes_nothing(stack, method, path, body, status, message):
    before = {pool: stack.lb_pool(pool) for pool in ("frontend", "backend")}
    saved = state_file(stack).read_bytes()
    generation = before["backend"]["generation"]
    if isinstance(body, dict) and isinstance(body.get("generation"), str):
        body = {**body, "generation": generation - 1 if body["generation"] == "G-1" else generation}
    code, answer = stack.lb_api(method, path, body)
    assert code == status, answer
    assert message in answer.get("error", answer.get("text", "")), answer
    assert {pool: stack.lb_pool(pool) for pool in ("frontend", "backend")} == before
    assert state_file(stack).read_bytes() == saved


def test_the_control_api_refuses_any_address_but_127_0_0_1(stack):
    before = stack.lb_pool("backend")
    for method, body in (("GET", None), ("PUT", {"generation": before["generation"], "members": []})):
        code, answer = stack.lb_api(method, "/members/backend", body, source="127.0.0.5")
        assert code == 403, answer
    assert stack.lb_pool("backend") == before


# --- balancing --------------------------------------------------------------------------------------------
def test_least_connections_gives_each_long_request_an_idle_replica(stack):
    assert stack.wait_until_none_rests("backend")  # a resting member gets no request
    backends = len(stack.lb_pool("backend")["members"])
    clients = [stack.client(source=f"127.0.7.{i}") for i in range(1, 2 * backends + 1)]
    threads = []
    for client in clients:
        threads.append(in_background(client.get, "/api/work?ms=2500"))
        time.sleep(0.15)  # each request is in flight before the next one is placed
    for thread, _ in threads:
        thread.join(timeout=30)
    served = [instance(out[0]) for _, out in threads]
    # Two rounds of one long request per replica: the LB's in-flight counts are shared by all workers.
    assert len(set(served[:backends])) == backends, served
    assert len(set(served[backends:])) == backends, served


def test_frontend_clients_are_spread_pinned_and_moved_only_off_a_draining_replica(stack):
    clients = [stack.client(source=f"127.0.8.{i}") for i in range(1, 41)]
    homes = [instance(c.get("/whoami")) for c in clients]
    assert len(set(homes)) == len(stack.lb_pool("frontend")["members"]), "spread by the client's address"
    assert all(c.cookies.get("tenfold_route") for c in clients)
    assert [instance(c.get("/whoami")) for c in clients] == homes, "the route cookie pins each client"
    with members_restored(stack, "frontend") as original:
        leaving = original[-1]["id"]
        status, body = put(stack, "frontend", plain(original, **{leaving: "draining"}))
        assert status == 200, body
        moved = [instance(c.get("/whoami")) for c in clients]
        for home, now in zip(homes, moved, strict=True):
            assert now == home if home != leaving else now != leaving
        assert leaving not in moved
        # The moved clients' cookies now name their new replicas: they stay there when the other comes back.
    assert [instance(c.get("/whoami")) for c in clients] == moved


def test_a_draining_member_finishes_its_request_and_gets_no_new_one(stack):
    with members_restored(stack, "backend") as original:
        leaving = original[-1]
        assert put(stack, "backend", [leaving])[0] == 200
        thread, out = in_background(stack.client(source="127.0.7.50").get, "/api/work?ms=3000")
        assert wait_for(lambda: stack.lb_pool("backend")["members"][0]["inflight"] == 1, timeout=5, step=0.05)
        assert put(stack, "backend", plain(original, **{leaving["id"]: "draining"}))[0] == 200
        shown = {m["id"]: m for m in stack.lb_pool("backend")["members"]}[leaving["id"]]
        assert (shown["state"], shown["inflight"]) == ("draining", 1)
        quick = [instance(stack.client(source=f"127.0.7.{60 + i}").get("/api/whoami")) for i in range(20)]
        assert leaving["id"] not in quick
        thread.join(timeout=30)
        assert out[0].status == 200 and instance(out[0]) == leaving["id"]
        shown = {m["id"]: m for m in stack.lb_pool("backend")["members"]}[leaving["id"]]
        assert shown["inflight"] == 0


def test_a_failing_member_is_marked_for_all_workers_and_its_requests_go_elsewhere(stack):
    max_fails = stack.setting("nginx_lb", "nginx_lb_upstream_max_fails")
    with members_restored(stack, "backend") as original:
        dead = {"id": "tenfoldit-backend-dead", "address": "127.0.0.1", "port": 28250, "state": "active"}
        assert put(stack, "backend", [*original, dead])[0] == 200
        answers = [stack.client(source=f"127.0.7.{100 + i}").get("/api/whoami") for i in range(40)]
        assert [a.status for a in answers] == [200] * 40, "each try on the dead member is retried elsewhere"
        shown = {m["id"]: m for m in stack.lb_pool("backend")["members"]}["tenfoldit-backend-dead"]
        assert shown["failing"] is True
        _, status = stack.lb_api("GET", "/status")
        # max_fails tries in all, not per worker: then it rests, for every worker.
        assert status["pools"]["backend"]["served"]["tenfoldit-backend-dead"]["failures"] == max_fails


def test_a_retry_goes_to_another_address_before_another_member_at_the_failed_one(stack):
    # Four members at an address where nothing listens (a Docker host gone, as the LB sees it) beside the
    # replicas at 127.0.0.1: a request whose try failed there is retried at 127.0.0.1, not at the same host.
    gone = [
        {"id": f"tenfoldit-backend-gone{i}", "address": "127.0.0.3", "port": 28250 + i, "state": "active"}
        for i in range(4)
    ]
    with members_restored(stack, "backend") as original:
        assert put(stack, "backend", [*original, *gone])[0] == 200
        start = access_log(stack).stat().st_size
        statuses = [stack.client(source=f"127.0.7.{150 + i}").get("/api/whoami").status for i in range(30)]
        time.sleep(1.5)  # the access log is flushed every second
        entries = backend_entries(stack, start, access_log(stack).stat().st_size)
    assert statuses == [200] * 30
    tries = [entry["upstream_addr"].split(", ") for entry in entries if "," in entry["upstream_addr"]]
    assert any(t[0].startswith("127.0.0.3:") for t in tries), f"no first try met a gone member: {tries}"
    # (a retry from 127.0.0.1 to 127.0.0.1 is a kept-alive connection the replica had closed)
    assert all(
        sum(a.startswith("127.0.0.3:") for a in t) <= 1 and t[-1].startswith("127.0.0.1:") for t in tries
    ), tries


def test_a_request_tries_as_many_members_as_proxy_next_upstream_tries_allows(stack):
    # Two members gone (a replica killed, one removed) beside one that serves: a request whose first two
    # tries meet the gone ones still has a third. Every member dead: one request tries three, then 502.
    tries = stack.setting("nginx_lb", "nginx_lb_proxy_next_upstream_tries")
    dead = [
        {"id": f"tenfoldit-backend-dead{i}", "address": "127.0.0.1", "port": 28260 + i, "state": "active"}
        for i in range(tries)
    ]
    with members_restored(stack, "backend") as original:
        assert put(stack, "backend", [*dead[:2], original[0]])[0] == 200
        statuses = [stack.client(source=f"127.0.7.{200 + i}").get("/api/whoami").status for i in range(12)]
        assert statuses == [200] * 12
        assert put(stack, "backend", dead)[0] == 200
        time.sleep(1.5)  # the access log is flushed every second: the requests above are in it before start
        start = access_log(stack).stat().st_size
        assert stack.client(source="127.0.7.220").get("/api/whoami").status == 502
        time.sleep(1.5)  # the access log is flushed every second
        entries = backend_entries(stack, start, access_log(stack).stat().st_size)
    assert [len(e["upstream_addr"].split(", ")) for e in entries] == [tries], entries


class OneRequestPerConnection(socketserver.BaseRequestHandler):
    """Answers the first request of each connection and keeps the connection open; at the next request on it,
    closes without an answer: a keep-alive connection the server dropped while nginx held it idle."""

    def handle(self) -> None:
        answered = False
        buffer = b""
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            buffer += data
            if b"\r\n\r\n" not in buffer:
                continue
            if answered:
                self.request.shutdown(socket.SHUT_RDWR)
                return
            body = b'{"instance": "keepalive-dropper"}'
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            answered, buffer = True, b""


def test_a_keepalive_connection_the_member_dropped_is_retried_on_a_new_one(stack):
    # nginx gives that try back; with every member of the pool tried (here the only one), the balancer
    # must hand it out again rather than answer 502.
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 28252), OneRequestPerConnection)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with members_restored(stack, "backend"):
            only = {
                "id": "tenfoldit-backend-dropper",
                "address": "127.0.0.1",
                "port": 28252,
                "state": "active",
            }
            assert put(stack, "backend", [only])[0] == 200
            client = stack.client(source="127.0.7.140")
            statuses = [client.get("/api/whoami").status for _ in range(6)]
            assert statuses == [200] * 6
    finally:
        server.shutdown()
        server.server_close()


def answers(stack) -> bool:
    try:
        return stack.lb_api("GET", "/members")[0] == 200
    except OSError:
        return False


# --- persistence ------------------------------------------------------------------------------------------
@pytest.mark.long
def test_members_survive_a_reload_and_a_restart_of_the_lb(engine, stack):
    before = {pool: stack.lb_pool(pool) for pool in ("frontend", "backend")}
    since = stack.lb_api("GET", "/status")[1]["counters_since"]
    lb = engine.containers.get(f"{stack.name}-lb")
    assert lb.exec_run(["nginx", "-s", "reload", "-c", "/etc/tenfold-nginx/nginx.conf"]).exit_code == 0
    time.sleep(1)
    assert {p: stack.lb_pool(p)["members"] for p in before} == {p: before[p]["members"] for p in before}
    assert stack.lb_api("GET", "/status")[1]["counters_since"] == since  # a reload keeps the counters
    time.sleep(max(0.0, since + 1.1 - time.time()))  # the start time is in whole seconds
    lb.restart(timeout=30)
    assert wait_for(lambda: answers(stack), timeout=30)
    assert stack.lb_api("GET", "/status")[1]["counters_since"] > since  # a restart starts them again
    after = {pool: stack.lb_pool(pool) for pool in ("frontend", "backend")}
    assert {p: (a["generation"], a["members"]) for p, a in after.items()} == {
        p: (b["generation"], [{**m, "inflight": 0, "failing": False} for m in b["members"]])
        for p, b in before.items()
    }
    assert stack.client(source="127.0.7.200").get("/api/whoami").status == 200
    # site.yml after that changes neither the configuration nor the members: no reload, no new generation.
    workers = stack.lb_workers(engine)
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-3000:]
    assert stack.lb_workers(engine) == workers
    assert {p: stack.lb_pool(p)["generation"] for p in before} == {p: after[p]["generation"] for p in before}


# --- counters ---------------------------------------------------------------------------------------------
def served(status: dict, pool: str) -> int:
    return sum(sum(m["requests"].values()) for m in status["pools"][pool]["served"].values())


def test_the_lb_counts_served_and_rejected_requests_apart(stack):
    _, before = stack.lb_api("GET", "/status")
    client = stack.client(source="127.0.7.210")
    ok = [client.get("/api/whoami").status for _ in range(10)]
    flood = [stack.client(source="127.0.7.211").get("/api/whoami").status for _ in range(60)]
    refused = flood.count(429)
    assert ok == [200] * 10 and refused > 0
    too_large = client.connection()
    too_large.request("POST", "/api/echo", body=b"x", headers={"Content-Length": str(64 * 1024 * 1024)})
    assert too_large.getresponse().status == 413
    too_large.close()
    _, after = stack.lb_api("GET", "/status")
    assert served(after, "backend") - served(before, "backend") == 10 + flood.count(200)
    rejected = after["pools"]["backend"]["rejected"]
    was = before["pools"]["backend"]["rejected"]
    assert rejected.get("429", 0) - was.get("429", 0) == refused
    assert rejected.get("413", 0) - was.get("413", 0) == 1

    # The histogram in /status, which the monitor reads: per-bucket counts that add up to the count.
    assert after["bucket_bounds"] == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    assert before["counters_since"] == after["counters_since"] <= time.time()
    for figures in after["pools"]["backend"]["served"].values():
        timing = figures["response_time"]
        assert len(timing["buckets"]) == 12 and sum(timing["buckets"]) == timing["count"]

    code, text = stack.lb_api("GET", "/metrics")
    metrics = text["text"]
    assert code == 200
    assert "# TYPE tenfold_lb_requests_total counter" in metrics
    assert "# TYPE tenfold_lb_upstream_response_time_seconds histogram" in metrics
    assert f'tenfold_lb_rejected_requests_total{{pool="backend",code="429"}} {rejected["429"]}' in metrics
    for member, figures in after["pools"]["backend"]["served"].items():
        line = f'tenfold_lb_upstream_response_time_seconds_count{{pool="backend",member="{member}"}} '
        assert f"{line}{figures['response_time']['count']}" in metrics
