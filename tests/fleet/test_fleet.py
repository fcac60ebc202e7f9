"""The test fleet: hosts reached over SSH as real ones, each with its own engine and address."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request

import docker
import pytest
from conftest import PROBE_IMAGE, ROOT, Fleet, ansible, fleet_script

pytestmark = pytest.mark.fleet

PROBE = "fleet-probe"
PROBE_PORT = 18999


def health(address: str, port: int = PROBE_PORT, timeout: float = 5) -> dict:
    with urllib.request.urlopen(f"http://{address}:{port}/health", timeout=timeout) as response:
        return json.loads(response.read())


def wait_health(address: str, port: int = PROBE_PORT, tries: int = 40) -> dict:
    """/health of a just started container: bounded, 40 tries of at most 0.5 s + 5 s."""
    last: Exception | None = None
    for _ in range(tries):
        try:
            return health(address, port)
        except OSError as exc:
            last = exc
            time.sleep(0.5)
    pytest.fail(f"http://{address}:{port}/health never answered: {last}")


def connect_outcome(address: str, port: int, timeout: float = 2) -> str:
    """'connected', 'refused', 'timeout' or 'unreachable'."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "connected"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unreachable"


@pytest.fixture(scope="module")
def probe(fleet: Fleet, probe_image_on) -> str:
    """A container on fleet-d1's engine publishing PROBE_PORT on all its addresses."""
    engine = fleet.engine("fleet-d1")
    engine.containers.run(
        PROBE_IMAGE,
        name=PROBE,
        detach=True,
        ports={"8080/tcp": PROBE_PORT},
        labels={"tenfold.fleet": "probe"},
    )
    wait_health(fleet.address("fleet-d1"))
    return PROBE


def test_the_inventory_has_the_scripts_hosts_and_addresses(fleet):
    status = fleet_script("status")
    assert status.rc == 0, status.err
    rows = {line.split()[0]: line.split() for line in status.out.splitlines()[1:]}
    assert set(rows) == set(fleet.hosts)
    for host, row in rows.items():
        assert row[1] == fleet.address(host), f"{host}: the script and inventories/fleet disagree"
        assert row[2:] == ["up", "up", "connected"], row
    assert {v["group"] for v in fleet.hosts.values()} == {"tenfold_docker", "tenfold_lb"}
    assert len(fleet.docker_hosts()) >= 2


def test_ansible_reaches_every_host_over_ssh(fleet):
    results = ansible("all", "ansible.builtin.setup", "gather_subset=!all,network")
    assert set(results) == set(fleet.hosts)
    for host, result in results.items():
        assert not result.get("unreachable") and not result.get("failed"), result
        facts = result["ansible_facts"]
        # the SSH server it reached is the host's own: its hostname and its own address
        assert facts["ansible_hostname"] == host
        assert fleet.address(host) in facts["ansible_all_ipv4_addresses"]


def test_each_host_reports_its_own_engine(fleet):
    results = ansible("all", "community.docker.docker_host_info")
    ids = {}
    for host, result in results.items():
        assert not result.get("unreachable") and not result.get("failed"), result
        info = result["host_info"]
        assert info["Name"] == host
        assert info["DockerRootDir"] == f"/var/lib/tenfold-fleet/{host}/docker"
        ids[host] = info["ID"]
    assert len(set(ids.values())) == len(fleet.hosts), ids
    assert docker.from_env().info()["ID"] not in ids.values(), "a fleet host reports the controller's engine"


def test_a_container_runs_on_its_own_hosts_engine_only(fleet, probe):
    assert fleet.engine("fleet-d1").containers.get(probe).status == "running"
    for host in set(fleet.hosts) - {"fleet-d1"}:
        assert fleet.engine(host).containers.list(all=True, filters={"name": probe}) == []
    assert docker.from_env().containers.list(all=True, filters={"name": f"^/{probe}$"}) == []
    # and Ansible on the host sees it through the host's default socket
    result = ansible("fleet-d1", "community.docker.docker_container_info", f"name={probe}")["fleet-d1"]
    assert result["exists"] is True, result


def test_a_published_port_answers_at_the_hosts_address(fleet, probe):
    assert health(fleet.address("fleet-d1"))["status"] == "ok"
    # not at another host's address, and not on the controller's loopback
    assert connect_outcome(fleet.address("fleet-d2"), PROBE_PORT) == "refused"
    assert connect_outcome("127.0.0.1", PROBE_PORT) == "refused"
    # the LB host reaches it across the fleet's network
    url = f"http://{fleet.address('fleet-d1')}:{PROBE_PORT}/health"
    code = f"'import urllib.request as u; print(u.urlopen(\"{url}\", timeout=5).status)'"
    lb = fleet_script("ssh", "fleet-lb", f"{ROOT}/.venv/bin/python", "-c", code)
    assert lb.rc == 0 and lb.out.strip() == "200", lb


def test_a_fleet_host_has_no_route_out_of_the_fleet(fleet):
    # route lookups only: no packet leaves, whatever the answer
    default = ["ip", "-4", "route", "show", "default"]
    gateways = re.findall(
        r"via (\S+)", subprocess.run(default, capture_output=True, text=True, check=True).stdout
    )
    outside = ["8.8.8.8", "192.168.1.1", *gateways]  # and the controller's gateway
    script = "; ".join(f"ip -4 route get {a} >/dev/null 2>&1 && echo routed {a}" for a in outside)
    run = fleet_script(
        "ssh", "fleet-d2", f"ip -4 route get {fleet.address('fleet-lb')} && {{ {script}; true; }}"
    )
    assert run.rc == 0, run.err
    assert "dev eth0" in run.out, run.out  # the fleet itself is routed
    assert "routed" not in run.out, run.out


def test_cut_makes_a_host_time_out_and_restore_brings_it_back(fleet, probe):
    address = fleet.address("fleet-d1")
    try:
        assert fleet_script("cut", "fleet-d1").rc == 0
        assert connect_outcome(address, PROBE_PORT) == "timeout"
        assert connect_outcome(address, 22) == "timeout"
        # the other hosts stay reachable
        assert connect_outcome(fleet.address("fleet-d2"), 22) == "connected"
        assert "cut" in next(line for line in fleet_script("status").out.splitlines() if "fleet-d1" in line)
        # Ansible sees a lost host: unreachable, while the others answer
        results = ansible("tenfold_docker", "ansible.builtin.ping")
        assert results["fleet-d1"].get("unreachable") is True, results["fleet-d1"]
        assert results["fleet-d2"].get("ping") == "pong", results["fleet-d2"]
    finally:
        assert fleet_script("restore", "fleet-d1").rc == 0
    assert health(address)["status"] == "ok"
    assert connect_outcome(address, 22) == "connected"


def test_images_are_sent_only_when_they_changed(fleet, probe_image_on):
    local_id = docker.from_env().images.get(PROBE_IMAGE).id
    assert probe_image_on["fleet-d1"].strip() == f"fleet-d1 {PROBE_IMAGE} sent"
    assert fleet.engine("fleet-d1").images.get(PROBE_IMAGE).id == local_id
    since = int(time.time())
    again = fleet_script("images", "--host", "fleet-d1", PROBE_IMAGE)
    assert again.rc == 0, again.err
    assert again.out.strip() == f"fleet-d1 {PROBE_IMAGE} unchanged"
    loads = fleet.engine("fleet-d1").events(
        since=since, until=int(time.time()) + 1, filters={"type": "image", "event": "load"}, decode=True
    )
    assert list(loads) == [], "an unchanged image was loaded again"


@pytest.mark.long
def test_a_changed_image_is_sent_again(fleet, probe_image_on):
    controller = docker.from_env()
    tag = "tenfold/fleet-probe:local"
    try:
        controller.images.get("tenfold/debian:bookworm").tag(tag)
        first = fleet_script("images", "--host", "fleet-d2", tag)
        assert first.out.strip() == f"fleet-d2 {tag} sent", first
        controller.images.get(PROBE_IMAGE).tag(tag)  # the same name, another image
        since = int(time.time())
        second = fleet_script("images", "--host", "fleet-d2", tag)
        assert second.out.strip() == f"fleet-d2 {tag} sent", second
        loads = fleet.engine("fleet-d2").events(
            since=since, until=int(time.time()) + 1, filters={"type": "image", "event": "load"}, decode=True
        )
        assert list(loads), "a load the engine did not record (test_images_are_sent_only... relies on it)"
        assert fleet.engine("fleet-d2").images.get(tag).id == controller.images.get(PROBE_IMAGE).id
        third = fleet_script("images", "--host", "fleet-d2", tag)
        assert third.out.strip() == f"fleet-d2 {tag} unchanged", third
    finally:
        controller.images.remove(tag, noprune=True)  # the tag only: the images stay


@pytest.mark.long
def test_every_tenfold_image_reaches_every_host_once(fleet):
    images = docker.from_env().images.list(name="tenfold/*")
    wanted = sorted(t for i in images for t in i.tags if t.startswith("tenfold/"))  # not the probe's tag
    first = fleet_script("images", timeout=900)
    assert first.rc == 0, first.err
    second = fleet_script("images")
    assert second.rc == 0, second.err
    assert sorted(second.out.splitlines()) == sorted(
        f"{h} {t} unchanged" for h in fleet.hosts for t in wanted
    )


@pytest.mark.long
def test_ansible_runs_a_pool_member_on_each_docker_host_the_lb_host_reaches(fleet, probe_image_on):
    for host in fleet.docker_hosts():
        assert fleet_script("images", "--host", host, PROBE_IMAGE).rc == 0
    args = (
        f"name=fleet-ansible image={PROBE_IMAGE} published_ports=18998:8080 state=started"
        ' labels=\'{"tenfold.fleet": "probe"}\''
    )
    results = ansible("tenfold_docker", "community.docker.docker_container", args)
    for host in fleet.docker_hosts():
        assert results[host].get("changed") is True, results[host]
        wait_health(fleet.address(host), 18998)
    code = "; ".join(
        f'print(u.urlopen("http://{fleet.address(h)}:18998/health", timeout=5).read().decode())'
        for h in fleet.docker_hosts()
    )
    lb = fleet_script(
        "ssh", "fleet-lb", f"{ROOT}/.venv/bin/python", "-c", f"'import urllib.request as u; {code}'"
    )
    assert lb.rc == 0, lb
    instances = {re.search(r'"instance": "(\w+)"', line).group(1) for line in lb.out.splitlines()}
    assert len(instances) == len(fleet.docker_hosts())
