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

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-fleet.sh"
INVENTORY = ROOT / "inventories" / "fleet"
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
# An image every fleet test can run: it serves GET /health on port 8080.
PROBE_IMAGE = "tenfold/backend:local"
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
