# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Driving the stack on the test fleet (scripts/test-fleet.sh, inventories/fleet): the fleet tests and
scripts/bench-fleet.py share it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from ansible_collections.tenfold.stack.plugins.module_utils.pool import LABEL_POOL, LABEL_STACK

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test-fleet.sh"
INVENTORY = ROOT / "inventories" / "fleet"
BIN = ROOT / ".venv" / "bin"
# The fleet inventory's stack, the images site.yml needs on the fleet's hosts, the controller's address there.
STACK = "tenfoldfleet"
IMAGES = ("tenfold/nginx:local", "tenfold/frontend:local", "tenfold/backend:local")
CONTROLLER = "10.231.15.1"
# Source addresses of load tests' clients (test-fleet.sh up gives them to the controller): none allowlisted.
CLIENTS = [f"10.231.15.{i}" for i in range(100, 200)]
ADDRESSES = {"fleet-lb": "10.231.15.10", "fleet-d1": "10.231.15.11", "fleet-d2": "10.231.15.12"}
DOCKER_HOSTS = ["fleet-d1", "fleet-d2"]
# The machine has one fleet: held by whoever uses it (a fleet suite, bench-fleet.py), waited for by the next.
LOCK = Path("/run/lock/tenfold-fleet-tests.lock")
LOCK_WAIT_S = 900


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@contextlib.contextmanager
def fleet_lock(wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the fleet; another user of it (another checkout's make test, a benchmark) waits up to wait_s."""
    deadline = time.monotonic() + wait_s
    with LOCK.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another user of the fleet held {LOCK} for {wait_s:g} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fleet_script(*args: str, timeout: float = 300) -> Run:
    """Run scripts/test-fleet.sh with these arguments."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def fleet_playbook(name: str, *args: str, timeout: float = 900) -> Run:
    """ansible-playbook NAME -i inventories/fleet ARGS, from the checkout."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), name, "-i", str(INVENTORY), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    return Run(proc.returncode, proc.stdout, proc.stderr)


def engine(host: str) -> docker.DockerClient:
    """A fleet host's own Docker engine, through its socket on the controller."""
    return docker.DockerClient(base_url=f"unix:///run/tenfold-fleet/{host}/docker.sock", timeout=60)


def lb_members() -> dict[str, list[dict]]:
    """Each pool's members as the LB on fleet-lb holds them (its status port answers on its loopback only)."""
    url = "http://127.0.0.1:8081/members"
    code = f"import urllib.request as u; print(u.urlopen('{url}', timeout=5).read().decode())"
    run = fleet_script("ssh", "fleet-lb", f"{BIN}/python", "-c", f'"{code}"')
    if run.rc != 0:
        raise RuntimeError(f"the LB's members could not be read: {run.output}")
    return {name: pool["members"] for name, pool in json.loads(run.out)["pools"].items()}


def fleet_status() -> dict:
    """`auto-scale.sh status --json` on fleet-lb, with the Docker hosts of the monitor's settings (rendered
    here by playbooks/monitor.yml from the inventory)."""
    if not (ROOT / "logs" / f"monitor-{STACK}.json").exists():
        rendered = fleet_playbook("playbooks/monitor.yml")
        if rendered.rc != 0:
            raise RuntimeError(f"playbooks/monitor.yml failed: {rendered.output[-3000:]}")
    run = fleet_script(
        "ssh", "fleet-lb", f"cd {ROOT} && TENFOLD_STACK={STACK} scripts/auto-scale.sh status --json"
    )
    if run.rc != 0:
        raise RuntimeError(f"auto-scale.sh status on fleet-lb failed: {run.output}")
    return json.loads(run.out)


def placed(pool: str, hosts: list[str] | None = None) -> dict[str, list[str]]:
    """Docker host -> the names of the pool's containers on its engine, sorted."""
    labels = [f"{LABEL_STACK}={STACK}", f"{LABEL_POOL}={pool}"]
    return {
        host: sorted(c.name for c in engine(host).containers.list(all=True, filters={"label": labels}))
        for host in hosts or DOCKER_HOSTS
    }


def serving_at(pool: str, host: str) -> list[str]:
    """The pool's members the LB sends new requests to on `host`."""
    return sorted(
        m["id"]
        for m in lb_members()[pool]
        if m["address"] == ADDRESSES[host] and m["state"] == "active" and not m.get("failing")
    )


class FleetMonitor:
    """The monitor as the role renders it for the fleet (its Docker hosts over SSH), run on fleet-lb by
    scripts/scaling-service.sh, with its own log files under `workdir` and `pools` over the role's policy."""

    FILES = ("metrics_log", "decisions_log", "scale_log", "state_file")

    def __init__(self, workdir: Path, pools: dict[str, dict]) -> None:
        rendered = fleet_playbook("playbooks/monitor.yml")
        if rendered.rc != 0:
            raise RuntimeError(f"playbooks/monitor.yml failed: {rendered.output[-3000:]}")
        settings = json.loads((ROOT / "logs" / f"monitor-{STACK}.json").read_text())
        settings.update(
            interval_s=1.0,
            window_s=5.0,
            prometheus_port=0,
            pools={name: {**settings["pools"][name], **policy} for name, policy in pools.items()},
            **{key: str(workdir / Path(settings[key]).name) for key in self.FILES},
        )
        self.config = workdir / "monitor.json"
        self.config.write_text(json.dumps(settings))

    def service(self, action: str) -> str:
        """scripts/scaling-service.sh ACTION on fleet-lb, with the stack and this monitor's settings."""
        run = fleet_script(
            "ssh",
            "fleet-lb",
            f"cd {ROOT} && TENFOLD_STACK={STACK} TENFOLD_MONITOR_CONFIG={self.config}"
            f" scripts/scaling-service.sh {action}",
            timeout=200,
        )
        if run.rc != 0:
            raise RuntimeError(f"scaling-service.sh {action} on fleet-lb failed: {run.output}")
        return run.out
