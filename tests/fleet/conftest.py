"""The test fleet (scripts/test-fleet.sh): up before the first test, down after the last, also on failure."""

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
import pytest
import yaml
from helpers import playbook

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-fleet.sh"
INVENTORY = ROOT / "inventories" / "fleet"
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
# An image every fleet test can run: it serves GET /health on port 8080.
PROBE_IMAGE = "tenfold/backend:local"
# The fleet inventory's stack, the images site.yml needs on the fleet's hosts, the controller's address there.
STACK = "tenfoldfleet"
IMAGES = ("tenfold/nginx:local", "tenfold/frontend:local", "tenfold/backend:local")
CONTROLLER = "10.231.15.1"
# Source addresses of load tests' clients (test-fleet.sh up gives them to the controller): none allowlisted.
CLIENTS = [f"10.231.15.{i}" for i in range(100, 200)]
# Held while a suite uses the fleet, and how long another suite waits for it (s).
LOCK = Path("/run/lock/tenfold-fleet-tests.lock")
LOCK_WAIT = 900

pytestmark = pytest.mark.fleet


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str


def fleet_script(*args: str, timeout: float = 300) -> Run:
    """Run scripts/test-fleet.sh with these arguments."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def ansible(pattern: str, module: str, args: str = "", timeout: float = 120) -> dict[str, dict]:
    """An ad-hoc ansible run against inventories/fleet: each host's result (json callback)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
    )
    cmd = [str(ANSIBLE), "-i", str(INVENTORY), pattern, "-m", module]
    if args:
        cmd += ["-a", args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT, check=False
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(
            f"ansible gave no JSON (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        )
    return result["plays"][0]["tasks"][0]["hosts"]


def inventory_hosts() -> dict[str, dict]:
    """Host → {address, group} as inventories/fleet/hosts.yml has them."""
    data = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    return {
        name: {"address": hostvars["ansible_host"], "group": group}
        for group, body in data["all"]["children"].items()
        for name, hostvars in body["hosts"].items()
    }


@dataclass(frozen=True)
class Fleet:
    hosts: dict[str, dict]

    def address(self, host: str) -> str:
        return self.hosts[host]["address"]

    def docker_hosts(self) -> list[str]:
        return sorted(h for h, v in self.hosts.items() if v["group"] == "tenfold_docker")

    def engine(self, host: str) -> docker.DockerClient:
        """The host's own Docker engine, through its socket on the controller."""
        return docker.DockerClient(base_url=f"unix:///run/tenfold-fleet/{host}/docker.sock", timeout=60)


@contextlib.contextmanager
def fleet_lock() -> Iterator[None]:
    """The machine has one fleet: a second fleet suite (another checkout's make test) waits for the first."""
    deadline = time.monotonic() + LOCK_WAIT
    with LOCK.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another fleet suite held {LOCK} for {LOCK_WAIT} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    assert os.geteuid() == 0, "the fleet tests need root (network namespaces, a dockerd per host)"
    with fleet_lock():
        # what a killed earlier run left (the fleet's own names only)
        fleet_script("down")
        up = fleet_script("up")
        try:
            assert up.rc == 0, f"test-fleet.sh up failed: {up.err[-3000:]}"
            yield Fleet(inventory_hosts())
        finally:
            down = fleet_script("down")
            assert down.rc == 0, down.err[-3000:]


@pytest.fixture(scope="session")
def probe_image_on(fleet: Fleet) -> dict[str, str]:
    """The probe image sent to fleet-d1 (the long tests send it to every host): the send's output."""
    run = fleet_script("images", "--host", "fleet-d1", PROBE_IMAGE)
    assert run.rc == 0, run.err
    return {"fleet-d1": run.out}


def fleet_playbook(name: str, *args: str, timeout: int = 900):
    return playbook(name, "-i", str(INVENTORY), *args, vars_file=None, timeout=timeout)


def lb_members(fleet: Fleet) -> dict[str, list[dict]]:
    """Each pool's members as the LB on fleet-lb holds them (its status port answers on its loopback only)."""
    url = "http://127.0.0.1:8081/members"
    code = f"import urllib.request as u; print(u.urlopen('{url}', timeout=5).read().decode())"
    run = fleet_script("ssh", "fleet-lb", f"{ROOT}/.venv/bin/python", "-c", f'"{code}"')
    assert run.rc == 0, run
    return {name: pool["members"] for name, pool in json.loads(run.out)["pools"].items()}


def placed(fleet: Fleet, pool: str, hosts: list[str] | None = None) -> dict[str, list[str]]:
    """Docker host -> the names of the pool's containers on its engine, sorted."""
    return {
        host: sorted(
            c.name
            for c in fleet.engine(host).containers.list(
                all=True, filters={"label": [f"tenfold.stack={STACK}", f"tenfold.pool={pool}"]}
            )
        )
        for host in hosts or fleet.docker_hosts()
    }


@pytest.fixture(scope="session")
def stack(fleet: Fleet) -> Iterator[Fleet]:
    """The images sent to every fleet host as from a registry, then site.yml over SSH; down.yml after."""
    sent = fleet_script("images", *IMAGES, timeout=900)
    assert sent.rc == 0, sent.err
    run = fleet_playbook("site.yml")
    try:
        assert run.rc == 0, run.output[-4000:]
        yield fleet
    finally:
        down = fleet_playbook("playbooks/down.yml")
        assert down.rc == 0, down.output[-3000:]
