"""Converging again changes nothing; a config nginx rejects changes nothing either (the bad-input table is
test_bad_input.py)."""

from __future__ import annotations

import pytest
from conftest import snapshot
from helpers import playbook

pytestmark = pytest.mark.integration


def test_second_run_changes_nothing(stack):
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0, run.output[-4000:]


def test_check_diff_on_a_converged_stack_reports_no_changes(stack):
    run = playbook("site.yml", "--check", "--diff")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0 and run.failed == 0, run.output[-4000:]


def test_config_that_fails_nginx_validation_never_reaches_the_running_lb(engine, stack):
    before = snapshot(engine, stack)
    run = playbook("site.yml", "-e", "nginx_lb_client_max_body_size=10q")
    assert run.rc != 0
    assert "nginx: [emerg]" in run.output, run.output[-3000:]
    assert snapshot(engine, stack) == before
    assert stack.client().get("/health").status == 200
    assert stack.client(source="127.0.0.11").get("/api/whoami").status == 200
