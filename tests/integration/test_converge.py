"""Converging again changes nothing; bad input and a broken nginx config change nothing either."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import stack_containers
from helpers import playbook

pytestmark = pytest.mark.integration


def snapshot(engine, stack) -> dict:
    """What a run must not change: the containers (by ID) and the live nginx config."""
    live = Path(f"/etc/tenfold/{stack.name}/nginx")
    files = {
        str(p.relative_to(live)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(live.rglob("*"))
        if p.is_file()
    }
    containers = {c.name: (c.id, c.status) for c in stack_containers(engine, stack.name)}
    return {"config": files, "containers": containers}


def test_second_run_changes_nothing(stack):
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0, run.output[-4000:]


def test_check_diff_on_a_converged_stack_reports_no_changes(stack):
    run = playbook("site.yml", "--check", "--diff")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0 and run.failed == 0, run.output[-4000:]


BAD_INPUTS = [
    ("app_pools_backend_replicas=11", "app_pools_backend_max_replicas=10"),
    ("app_pools_frontend_replicas=2", "app_pools_frontend_min_replicas=3"),
    ("app_pools_backend_replicas=abc", "app_pools_backend_replicas"),
    ("nginx_lb_frontend_method=random", "nginx_lb_frontend_method"),
    ("nginx_lb_backend_method=fastest", "nginx_lb_backend_method"),
    ("tls_certificate_src=/nonexistent/fullchain.pem", "/nonexistent/fullchain.pem"),
    ("nginx_lb_https_port=70000", "nginx_lb_https_port"),
    ("nginx_lb_http_port=eighty", "nginx_lb_http_port"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_clearly_and_changes_nothing(engine, stack, extra, message):
    before = snapshot(engine, stack)
    run = playbook("site.yml", "-e", extra)
    assert run.rc != 0
    assert message in run.output, run.output[-3000:]
    assert snapshot(engine, stack) == before
    assert stack.client().get("/health").status == 200


def test_config_that_fails_nginx_validation_never_reaches_the_running_lb(engine, stack):
    before = snapshot(engine, stack)
    run = playbook("site.yml", "-e", "nginx_lb_client_max_body_size=10q")
    assert run.rc != 0
    assert "nginx: [emerg]" in run.output, run.output[-3000:]
    assert snapshot(engine, stack) == before
    assert stack.client().get("/health").status == 200
    assert stack.client(source="127.0.0.11").get("/api/whoami").status == 200
