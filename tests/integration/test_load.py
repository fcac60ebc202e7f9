"""scripts/load-test.sh against the test stack: the short profile of the scenarios and of the spike.

The tests check that the result files are complete and that their verdicts follow the criteria; they never
check how fast the stack was (the figures are the benchmark's, docs/benchmarks.md). The load source is the
allowlisted range 127.0.3.0/24 (tests/integration/stack.yml); the rate limiter stays on for everyone else.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from benchkit import stats as tl
from conftest import pool_containers
from helpers import ROOT, STACK_VARS, playbook

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "load-test.sh"
POOLS = ("frontend", "backend")


def load_test(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def sizes(engine, stack) -> dict[str, int]:
    return {pool: sum(c.status == "running" for c in pool_containers(engine, stack, pool)) for pool in POOLS}


def test_the_scenarios_short_profile_writes_a_complete_result_file_and_a_summary(stack, tmp_path):
    out = tmp_path / "load-test-results.json"
    run = load_test("--vars", str(STACK_VARS), "--short", "--out", str(out), "--workdir", str(tmp_path))
    # 0: every scenario passed; 1: one failed the criteria. Either is a verdict; 2 would be an error.
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert tl.validate(doc) == []
    assert [s["name"] for s in doc["scenarios"]] == [f"users-{n}" for n in (10, 50, 100, 200, 500, 1000)]
    assert all(s["requests"] > 0 and s["duration_s"] == 3 for s in doc["scenarios"])
    assert run.returncode == (0 if doc["pass"] else 1)
    # The allowlisted load source is never rate-limited.
    assert not any("http 429" in s["errors"] for s in doc["scenarios"]), [
        s["errors"] for s in doc["scenarios"]
    ]
    # The summary table on the terminal: a line per scenario with its verdict.
    for scenario in doc["scenarios"]:
        verdict = "PASS" if scenario["pass"] else "FAIL"
        assert any(
            line.startswith(scenario["name"]) and verdict in line for line in run.stdout.splitlines()
        ), run.stdout
    assert "model: closed" in run.stdout


def test_only_the_allowlist_exempts_the_load_source_from_the_rate_limiter(stack, tmp_path):
    args = ["--vars", str(STACK_VARS), "--users", "20", "--duration", "3", "--paths", "/api/whoami"]
    allowed = tmp_path / "allowed.json"
    run = load_test(*args, "--sources", "127.0.3.40", "--out", str(allowed))
    assert run.returncode in (0, 1), run.stderr[-3000:]
    assert json.loads(allowed.read_text())["scenarios"][0]["errors"] == {}
    # The same load from an address outside nginx_lb_allowlist: the rate limiter answers 429, and the runner
    # warned about it before it began.
    limited = tmp_path / "limited.json"
    run = load_test(*args, "--sources", "127.0.0.50", "--out", str(limited))
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "not in nginx_lb_allowlist" in run.stderr
    scenario = json.loads(limited.read_text())["scenarios"][0]
    assert scenario["errors"].get("http 429", 0) > 0 and scenario["pass"] is False
    assert "error_percent <= max_error_percent" in [
        c["criterion"] for c in scenario["checks"] if not c["pass"]
    ]


def test_bad_input_fails_before_any_load(stack, tmp_path):
    out = tmp_path / "never.json"
    for bad in (
        ["--users", "10,abc"],
        ["--sources", "10.0.0.1"],
        ["--duration", "0"],
        ["--max-errors", "200"],
    ):
        run = load_test("--vars", str(STACK_VARS), *bad, "--out", str(out), timeout=60)
        assert run.returncode == 2, (bad, run.stdout, run.stderr)
        assert not out.exists()


def test_the_spike_refuses_allowlisted_or_too_few_client_addresses(stack, tmp_path):
    out = tmp_path / "never.json"
    for sources, message in (
        ("127.0.3.1-127.0.3.200", "127.0.3.1 (and 199 more) is in nginx_lb_allowlist"),
        ("127.0.5.1-127.0.5.20", "the spike needs at least 100 client addresses, got 20"),
    ):
        run = load_test(
            "spike", "--vars", str(STACK_VARS), "--short", "--sources", sources, "--out", str(out)
        )
        assert run.returncode == 2, (sources, run.stdout, run.stderr)
        assert message in run.stderr
        assert not out.exists()


@pytest.mark.long
def test_the_spike_short_profile_writes_its_timeline_and_plot_and_restores_the_pools(engine, stack, tmp_path):
    before = sizes(engine, stack)
    out = tmp_path / "spike.json"
    try:
        run = load_test(
            "spike",
            "--vars",
            str(STACK_VARS),
            "--short",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
            timeout=400,
        )
        assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
        doc = json.loads(out.read_text())
        assert tl.validate(doc) == []
        assert run.returncode == (0 if doc["pass"] else 1)
        assert [p["name"] for p in doc["phases"]] == ["baseline", "spike", "after"]
        assert doc["phases"][1]["offered_rps"] == 10 * doc["phases"][0]["offered_rps"]
        rows = doc["timeline"]
        assert len(rows) == 26 and all(r["served_rps"] + r["failed_rps"] >= 0 for r in rows)
        assert sum(r["served_rps"] + r["failed_rps"] for r in rows) > 0
        # The monitor ran: every second after its first collection has the replicas of both pools.
        assert doc["monitor"] is True
        assert set(rows[-1]["replicas"]) == set(POOLS)
        assert all(isinstance(n, int) and n >= 3 for n in rows[-1]["replicas"].values())
        png = out.with_suffix(".png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not any("http 429" in p["errors"] for p in doc["phases"])
        # The runner put the pools back as they were.
        assert sizes(engine, stack) == before
    finally:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sizes(engine, stack) != before:
            time.sleep(1)
        for pool, replicas in before.items():
            if sizes(engine, stack)[pool] != replicas:
                playbook("scale.yml", "-e", f"pool={pool}", "-e", f"replicas={replicas}")
