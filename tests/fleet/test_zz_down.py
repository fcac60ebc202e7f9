"""down leaves nothing of the fleet; a failed up removes what it made. Runs last (file order)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import docker
import pytest
from conftest import Fleet, fleet_script

pytestmark = pytest.mark.fleet


def running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waits only for its parent, often PID 1, to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def leftovers() -> list[str]:
    """Whatever of a fleet exists on this machine: namespaces, links, processes, mounts, files, cgroups."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if "fleet" in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if "fleet" in line]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tenfold-fleet" in cmdline and int(proc.name) != os.getpid():
            found.append(f"process {proc.name}: {cmdline}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if "fleet" in line.split()[4]]
    found += [f"path {p}" for p in ("/run/tenfold-fleet", "/var/lib/tenfold-fleet") if Path(p).exists()]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/tenfold-fleet-*")]
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
    found += [f"nft {line}" for line in nft.splitlines() if "fleet" in line]
    return found


def test_down_leaves_nothing_of_the_fleet(fleet: Fleet):
    pids = []
    for host in fleet.hosts:
        ns = subprocess.run(["ip", "netns", "pids", host], capture_output=True, text=True, check=True)
        pids += [int(pid) for pid in ns.stdout.split()]
    assert pids, "the fleet's hosts run no process"
    down = fleet_script("down")
    assert down.rc == 0, down.err
    assert leftovers() == []
    assert [pid for pid in pids if running(pid)] == []
    assert docker.from_env().containers.list(all=True, filters={"label": "tenfold.fleet"}) == []
    # down again (the session's teardown does it too) is a no-op
    assert fleet_script("down").rc == 0


def test_a_failed_up_removes_what_it_made():
    assert leftovers() == []
    # a link with the name the fleet's uplink needs makes up fail halfway, after namespaces and keys
    subprocess.run(["ip", "link", "add", "fleet0", "type", "bridge"], check=True)
    try:
        up = fleet_script("up")
        assert up.rc != 0
        assert re.search(r"up failed: removing what it made", up.err), up.err
        assert leftovers() == []
    finally:
        subprocess.run(["ip", "link", "del", "fleet0"], capture_output=True, check=False)
