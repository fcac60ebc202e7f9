"""The stack's shared scale state on the fleet: a scale lock taken by a run from the controller is on
fleet-lb's disk (the state host, the first LB host), lives by its lease there, and the run's scale event lands
beside it; the controller's own /var/lib/tenfold has none of it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import INVENTORY, ROOT, fleet_script

pytestmark = pytest.mark.fleet

STACK = "tenfoldfleet"
STATE = f"/var/lib/tenfold/{STACK}/scale"  # on the state host
# fleet-lb's own /var/lib/tenfold is this directory of the controller (scripts/test-fleet.sh's bind mount).
ON_FLEET_LB = Path("/var/lib/tenfold-fleet/fleet-lb/_var_lib_tenfold") / STACK / "scale"
ON_CONTROLLER = Path(STATE)
PLAYBOOK = ROOT / "tests" / "playbooks" / "hold_scale_lock.yml"


def hold_lock(go: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), str(PLAYBOOK)]
    return subprocess.Popen(
        [*command, "-e", f"go={go}", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def held_seen_from_fleet_lb() -> str:
    """What the monitor on fleet-lb sees of the lock: its holder, and whether it counts as alive."""
    code = (
        # the venv's monitor package installs the collection's module_utils
        "from ansible_collections.tenfold.stack.plugins.module_utils import lock as t;"
        f" o = t.read_owner('{STATE}/scale.lock'); print(o and o.host, o and t.is_alive(o))"
    )
    run = fleet_script("ssh", "fleet-lb", f'cd {ROOT} && .venv/bin/python -c "{code}"')
    assert run.rc == 0, run.err
    return run.out.strip()


def test_a_lock_taken_from_the_controller_is_on_fleet_lbs_disk_and_its_run_recorded_there(fleet, tmp_path):
    events = ON_FLEET_LB / "scale-events.jsonl"
    earlier = len(events.read_text().splitlines()) if events.exists() else 0  # the stack tests' runs
    go = tmp_path / "go"
    holder = hold_lock(go)
    try:
        assert wait_for((ON_FLEET_LB / "scale.lock").exists, 90), holder.stdout.read()[-3000:]
        assert not ON_CONTROLLER.exists()
        owner = json.loads((ON_FLEET_LB / "scale.lock").read_text())
        assert (owner["pid"], owner["host"]) == (holder.pid, socket.gethostname())  # the controller's run
        assert held_seen_from_fleet_lb() == f"{socket.gethostname()} True"
        # A second run from the controller waits for that lock, then fails naming it.
        second = hold_lock(go, "-e", "lock_timeout=2")
        out, _ = second.communicate(timeout=120)
        assert second.returncode != 0 and f"another run holds {STATE}/scale.lock" in out, out[-3000:]
        # The holder's run renews its lease on fleet-lb every 20 s (the callback, through the state host).
        renewed_before = (ON_FLEET_LB / "scale.lock").stat().st_mtime
        assert wait_for(lambda: (ON_FLEET_LB / "scale.lock").stat().st_mtime > renewed_before, 45)
        go.touch()
        out, _ = holder.communicate(timeout=120)
        assert holder.returncode == 0, out[-3000:]
    finally:
        go.touch()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not (ON_FLEET_LB / "scale.lock").exists()
    runs = [json.loads(line) for line in events.read_text().splitlines()[earlier:]]
    assert [(r["stack"], r["result"]) for r in runs] == [(STACK, "failed"), (STACK, "ok")]
    assert "another run holds" in runs[0]["error"]
    assert not ON_CONTROLLER.exists()
