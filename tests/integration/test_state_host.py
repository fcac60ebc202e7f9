"""The stack's shared scale state on its state host: scale.yml, playbooks/scale-check.yml (another playbook
directory) and the monitor take one lock and keep one history, in the state directory, not in a checkout."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import docker
import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import lock as tenfold_lock
from conftest import pool_containers
from helpers import EVENTS_LOG, ROOT, SCALE_LOCK, events_count, events_since, playbook
from tenfold_monitor import events
from tenfold_monitor.promote import FastPath
from tenfold_monitor.service import Settings

pytestmark = pytest.mark.integration

# Where the lock and the events were before they moved to the state host: relative to the top playbook.
OLD_PLACES = [ROOT / "logs", ROOT / "playbooks" / "logs"]


def old_files(stack_name: str) -> dict[str, tuple[float, int]]:
    """Lock and event files in the playbook directories' logs/, with their mtime and size."""
    found = {}
    for folder in OLD_PLACES:
        for path in [folder / f"scale-{stack_name}.lock", folder / "scale-events.jsonl"]:
            if path.exists():
                found[str(path)] = (path.stat().st_mtime, path.stat().st_size)
    return found


def scale_check(tmp_path: Path, *extra: str):
    """playbooks/scale-check.yml as AWX's schedule runs it, its monitor settings kept out of the checkout."""
    return playbook(
        "playbooks/scale-check.yml",
        "-e",
        f"monitor_settings_path={tmp_path / 'monitor.json'}",
        "-e",
        "monitor_prometheus_port=0",
        *extra,
    )


def test_scale_check_scale_yml_and_the_monitor_share_one_lock_on_the_state_host(engine, stack, tmp_path):
    settings = Settings(stack=stack.name)  # the monitor's defaults: no path of its own
    assert (settings.scale_lock(), settings.events_log()) == (SCALE_LOCK, EVENTS_LOG)
    assert str(SCALE_LOCK).startswith(f"/var/lib/tenfold/{stack.name}/scale/")
    size = len(pool_containers(engine, stack, "backend"))
    before_events, before_old = events_count(), old_files(stack.name)
    holder = subprocess.Popen(["sleep", "120"])  # a scale run in progress, as a live process
    owner = tenfold_lock.owner_for(holder.pid, run="test_state_host: a scale run in progress")
    SCALE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    SCALE_LOCK.write_text(json.dumps(vars(owner)))
    try:
        check = scale_check(tmp_path, "-e", "app_pools_scale_lock_timeout=3")
        scale = playbook(
            "scale.yml", "-e", "pool=backend", "-e", "direction=up", "-e", "app_pools_scale_lock_timeout=3"
        )
        path = FastPath(
            stack.name,
            docker.from_env,
            f"http://127.0.0.1:{stack.status_port}",
            settings.scale_lock(),
            settings.events_log(),
        )
        promotion = path.promote("backend", size, size + 1)
    finally:
        released = tenfold_lock.release(str(SCALE_LOCK), owner)
        holder.kill()
        holder.wait()
    assert released, "a run waiting for the lock took it while its holder was alive"
    held = f"another run holds {SCALE_LOCK}: pid {holder.pid}"
    assert check.rc != 0 and held in check.output, check.output[-3000:]
    assert scale.rc != 0 and held in scale.output, scale.output[-3000:]
    assert (promotion.result, promotion.promoted) == ("skipped", ())
    assert held in promotion.reason
    assert len(pool_containers(engine, stack, "backend")) == size

    # Free again: the check's scale run takes the lock there and records its event in the state directory,
    # and so does a run of scale.yml from the top directory, whose change the monitor's cooldown then counts.
    check = scale_check(tmp_path)
    assert check.rc == 0, check.output[-3000:]
    up = playbook("scale.yml", "-e", "pool=backend", "-e", "direction=up")
    try:
        assert up.rc == 0, up.output[-3000:]
        assert not SCALE_LOCK.exists()
        runs = events_since(before_events)
        assert [r["result"] for r in runs] == [
            "failed",
            "failed",
            "ok",
            "ok",
        ]  # refused runs are recorded too
        assert {p["pool"] for p in runs[2]["pools"]} == {"frontend", "backend"}  # the check's run
        assert (
            events.last_scaled(settings.events_log(), stack.name)["backend"]
            == events.parse(json.dumps(runs[3])).end
        )
        assert old_files(stack.name) == before_old  # nothing in the playbook directories' logs/
    finally:
        assert playbook("scale.yml", "-e", "pool=backend", "-e", f"replicas={size}").rc == 0
