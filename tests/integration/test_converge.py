"""Converging again changes nothing (bad input: test_bad_input.py; a config nginx rejects, under load:
test_faults_lb.py)."""

from __future__ import annotations

import pytest
from helpers import playbook

pytestmark = pytest.mark.integration


@pytest.mark.long
def test_second_run_changes_nothing(stack):
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0, run.output[-4000:]


@pytest.mark.long
def test_check_diff_on_a_converged_stack_reports_no_changes(stack):
    run = playbook("site.yml", "--check", "--diff")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0 and run.failed == 0, run.output[-4000:]
