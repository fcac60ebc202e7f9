"""A backend replica at its concurrency limit: the requests beyond it wait in line, none fails.

Straight to replica 1 of the session stack on its published port (plain HTTP, no LB: the LB's rate limits
are not what this is about), with as many requests at once as the replica works on plus half again.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest

pytestmark = pytest.mark.integration

WORK_MS = 400


def work(port: int, results: list, start: threading.Barrier) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        start.wait(timeout=10)
        conn.request("GET", f"/api/work?ms={WORK_MS}")
        response = conn.getresponse()
        results.append((response.status, json.loads(response.read())))
    except OSError as exc:
        results.append((None, {"error": repr(exc)}))
    finally:
        conn.close()


def test_requests_beyond_the_concurrency_limit_wait_and_none_fails(stack):
    limit = int(stack.setting("app_pools", "app_pools_backend_max_concurrency"))
    port = int(stack.vars["app_pools_backend_port_base"]) + 1
    count = limit + limit // 2
    results: list = []
    start = threading.Barrier(count)
    threads = [threading.Thread(target=work, args=(port, results, start)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [status for status, _ in results] == [200] * count, results
    queued = sorted(body["queued_ms"] for _, body in results)
    # The first `limit` start at once; the rest wait about one request's work for a free slot.
    assert max(queued[:limit]) < WORK_MS / 2, queued
    assert min(queued[limit:]) >= WORK_MS / 2, queued
    waited = queued[limit:]
    print(f"\n{count} requests of {WORK_MS} ms, a replica of {limit}: waited {waited[0]}-{waited[-1]} ms")
