"""`make down` removes everything the stack created, and nothing else. Runs last (file order)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import stack_containers
from helpers import playbook

pytestmark = pytest.mark.integration


def test_down_leaves_no_containers_networks_volumes_or_files(engine, stack):
    others_before = {c.id for c in engine.containers.list(all=True)} - {
        c.id for c in stack_containers(engine, stack.name)
    }
    run = playbook("playbooks/down.yml")
    assert run.rc == 0, run.output[-3000:]
    assert stack_containers(engine, stack.name) == []
    assert engine.networks.list(filters={"label": f"tenfold.stack={stack.name}"}) == []
    assert engine.volumes.list(filters={"label": f"tenfold.stack={stack.name}"}) == []
    assert not Path(f"/etc/tenfold/{stack.name}").exists()
    assert not Path(f"/var/log/tenfold/{stack.name}").exists()
    table = subprocess.run(["nft", "list", "table", "inet", f"tenfold_{stack.name}_lb"], capture_output=True)
    assert table.returncode != 0, "the per-address connection bound is still in the kernel"
    assert others_before <= {c.id for c in engine.containers.list(all=True)}
    # Down again is a no-op, and leaves the fixture's own teardown nothing to do.
    assert playbook("playbooks/down.yml").rc == 0
