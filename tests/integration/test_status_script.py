"""scripts/auto-scale.sh status (and its scale commands' plumbing) against a small stack of this test's own.

Two backend containers labelled as stack `statustest`; the session stack's LB, whose backend pool briefly has
only the first of them as its member; an events log with one event of the stack, one of another stack and a
malformed line. The containers are removed afterwards, also when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import members_restored, put

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "scripts" / "auto-scale.sh"
STACK = "statustest"
IMAGE = "tenfold/backend:local"
PORTS = {1: 29201, 2: 29202, 3: 29203}  # 3: a warm replica
HEALTHY_WITHIN_S = 60

EVENTS = [
    {
        "start": "2026-11-27T12:00:00.000Z",
        "end": "2026-11-27T12:00:21.500Z",
        "duration_s": 21.5,
        "trigger": "monitor",
        "stack": STACK,
        "request": {"pool": "backend", "direction": "up", "step": "1", "replicas": ""},
        "pools": [{"pool": "backend", "current": 1, "target": 2, "direction": "up", "clamped": False}],
        "result": "ok",
        "failed_task": None,
        "error": None,
    },
    {
        "start": "2026-11-27T12:05:00.000Z",
        "duration_s": 3.0,
        "trigger": "manual",
        "stack": "someotherstack",
        "pools": [{"pool": "backend", "current": 3, "target": 9}],
        "result": "ok",
    },
]


def remove_stack(engine: docker.DockerClient) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"tenfold.stack={STACK}"}):
        container.remove(force=True)


def start_replica(engine: docker.DockerClient, index: int) -> None:
    name = f"{STACK}-backend-{index}"
    engine.containers.run(
        IMAGE,
        name=name + ("-warm" if index == 3 else ""),
        detach=True,
        labels={"tenfold.stack": STACK, "tenfold.pool": "backend", "tenfold.replica": str(index)},
        environment={"INSTANCE_NAME": name, "POOL": "backend", "PORT": "8080"},
        ports={"8080/tcp": ("127.0.0.1", PORTS[index])},
        user="10001",
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        nano_cpus=int(0.5e9),
        mem_limit="256m",
        healthcheck={
            "test": ["CMD", "/usr/local/bin/healthcheck"],
            "interval": 10**9,
            "timeout": 3 * 10**9,
            "retries": 3,
            "start_period": 10**9,
        },
    )


def wait_healthy(engine: docker.DockerClient) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        containers = engine.containers.list(filters={"label": f"tenfold.stack={STACK}"})
        states = [c.attrs["State"].get("Health", {}).get("Status") for c in containers]
        if len(states) == len(PORTS) and all(s == "healthy" for s in states):
            return
        time.sleep(0.5)
    raise AssertionError(f"{STACK} replicas not healthy within {HEALTHY_WITHIN_S} s: {states}")


@pytest.fixture(scope="module")
def replicas(engine: docker.DockerClient) -> Iterator[None]:
    """The stack's two replicas (`engine` is the session's Docker client, from conftest.py)."""
    remove_stack(engine)  # leftovers of an interrupted earlier run
    try:
        for index in PORTS:
            start_replica(engine, index)
        wait_healthy(engine)
        yield
    finally:
        remove_stack(engine)
        assert not engine.containers.list(all=True, filters={"label": f"tenfold.stack={STACK}"})


@pytest.fixture
def files(tmp_path: Path, stack) -> Iterator[list[str]]:
    events = tmp_path / "scale-events.jsonl"
    lines = [json.dumps(EVENTS[0]), "{this line is cut", json.dumps(EVENTS[1])]
    events.write_text("\n".join(lines) + "\n")
    member = {"id": f"{STACK}-backend-1", "address": "127.0.0.1", "port": PORTS[1], "state": "active"}
    with members_restored(stack, "backend"):
        assert put(stack, "backend", [member])[0] == 200
        members_url = f"http://127.0.0.1:{stack.status_port}/members"
        yield ["--stack", STACK, "--members-url", members_url, "--events", str(events)]


def wrapper(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run auto-scale.sh from a directory other than the repo, as an operator might."""
    return subprocess.run(
        [str(WRAPPER), *args],
        cwd="/",
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines() if line.startswith(f"{STACK}-")}


# --- status -----------------------------------------------------------------------------------------
def test_status_table_shows_both_replicas_and_which_one_the_lb_serves(replicas, files):
    run = wrapper("status", *files)
    assert run.returncode == 0, run.stderr
    table = run.stdout
    print(table)  # pytest -s shows the table, as docs/operations.md does
    found = rows(table)
    assert set(found) == {f"{STACK}-backend-1", f"{STACK}-backend-2", f"{STACK}-backend-3-warm"}
    member, backup = found[f"{STACK}-backend-1"], found[f"{STACK}-backend-2"]
    assert member[1:3] == ["running", "healthy"] and backup[1:3] == ["running", "healthy"]
    assert member[-3:] == [f"127.0.0.1:{PORTS[1]}", "active", "0"]  # address, LB state, LB in flight
    assert backup[-3:] == [f"127.0.0.1:{PORTS[2]}", "no", "-"]
    assert found[f"{STACK}-backend-3-warm"][-3:] == [f"127.0.0.1:{PORTS[3]}", "warm", "-"]
    assert "MiB / 256 MiB" in table
    # 2 serving (1 in the LB), 1 warm
    assert ["backend", "2", "2", "2", "1", "1"] in [line.split() for line in table.splitlines()]
    assert f"Load balancer: {STACK}-lb  not found" in table
    assert "monitor  backend 1->2" in table and "3->9" not in table


def test_status_json_parses_and_holds_the_same_facts(replicas, files):
    run = wrapper("status", "--json", *files)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["stack"] == STACK and data["lb"] is None and data["members_known"] is True
    assert data["pools"] == [
        {
            "pool": "backend",
            "wanted": 2,
            "wanted_from": "event",
            "running": 2,
            "healthy": 2,
            "in_lb": 1,
            "warm": 1,
        }
    ]
    by_name = {r["name"]: r for r in data["replicas"]}
    assert by_name[f"{STACK}-backend-1"]["in_lb"] is True
    assert by_name[f"{STACK}-backend-2"]["in_lb"] is False
    assert all(r["cpu_percent"] is not None and r["memory_limit"] == 256 * 2**20 for r in by_name.values())
    assert [e["trigger"] for e in data["events"]] == ["monitor"]


def test_status_of_a_stack_without_containers_says_so(files):
    run = wrapper("status", *files[:1], f"{STACK}-none", *files[2:])
    assert run.returncode == 0, run.stderr
    assert f"No containers of stack '{STACK}-none'" in run.stdout


def test_status_without_a_docker_engine_fails_with_a_clear_message(files):
    run = wrapper("status", *files, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert run.returncode == 1
    assert "cannot reach the Docker engine" in run.stderr and not run.stdout


# --- the wrapper's scale commands (syntax check only: nothing is scaled) ----------------------------------
def test_scale_commands_build_the_playbook_call_and_log_it(tmp_path):
    log = tmp_path / "logs" / "auto-scale.log"
    env = {"TENFOLD_AUTOSCALE_LOG": str(log), "TENFOLD_TRIGGER": "monitor"}
    run = wrapper("scale-up", "backend", "2", "--", "--syntax-check", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "playbook: scale.yml" in run.stdout  # still printed to the terminal
    header, *body = log.read_text().splitlines()
    assert header.endswith(
        "scale.yml -e direction=up -e pool=backend -e step=2 -e trigger=monitor --syntax-check"
    )
    assert "playbook: scale.yml" in body and body[-1].endswith("exit 0")


def test_scale_commands_keep_ansible_playbooks_exit_code(tmp_path):
    log = tmp_path / "auto-scale.log"
    run = wrapper("scale", "backend", "4", "--", "--syntax-check", "-e", "@/nonexistent.yml",
                  env={"TENFOLD_AUTOSCALE_LOG": str(log)})  # fmt: skip
    assert run.returncode == 1
    assert "-e pool=backend -e replicas=4 -e trigger=manual" in log.read_text().splitlines()[0]
    assert log.read_text().splitlines()[-1].endswith("exit 1")


@pytest.mark.parametrize(
    "args",
    [[], ["grow"], ["scale", "backend"], ["scale", "backend", "many"], ["scale-down", "backend", "1", "x"]],
)
def test_bad_arguments_print_the_usage_and_exit_2(args, tmp_path):
    run = wrapper(*args, env={"TENFOLD_AUTOSCALE_LOG": str(tmp_path / "log")})
    assert run.returncode == 2
    assert "Usage: auto-scale.sh COMMAND" in run.stderr
    assert not (tmp_path / "log").exists()
