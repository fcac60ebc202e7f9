"""The test fleet (scripts/test-fleet.sh): up before the first test, down after the last, also on failure."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
import yaml
from fleetlib import IMAGES, INVENTORY, ROOT, engine, fleet_lock, fleet_playbook, fleet_script

ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
# An image every fleet test can run: it serves GET /health on port 8080. A tag of the backend image of its
# own, so that the stack's tests, which send the backend image first, leave it new to the fleet's hosts.
PROBE_IMAGE = "tenfold-fleet/probe:local"

pytestmark = pytest.mark.fleet


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
        return engine(host)


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
def probe_image_on(fleet: Fleet) -> Iterator[dict[str, str]]:
    """The probe image sent to fleet-d1 (the long tests send it to every host): the send's output."""
    controller = docker.from_env()
    controller.images.get("tenfold/backend:local").tag(PROBE_IMAGE)
    try:
        run = fleet_script("images", "--host", "fleet-d1", PROBE_IMAGE)
        assert run.rc == 0, run.err
        yield {"fleet-d1": run.out}
    finally:
        controller.images.remove(PROBE_IMAGE)  # the tag only: the backend image stays


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
        # test_zz_down takes the whole fleet down, the stack with it; otherwise down.yml must leave nothing
        if "up" in fleet_script("status").out:
            down = fleet_playbook("playbooks/down.yml")
            assert down.rc == 0, down.output[-3000:]
