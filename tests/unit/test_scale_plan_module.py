"""tenfold.stack.pool_info's reading of the engine (only running replicas count, by their own indexes) and
tenfold.stack.scale_plan's plan from the pools' sizes across the Docker hosts."""

from types import SimpleNamespace

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import engine as docker_utils
from ansible_collections.tenfold.stack.plugins.module_utils import scale
from conftest import load_plugin

info = load_plugin("modules", "pool_info")


class FakeEngine:
    def __init__(self, *containers):
        self.containers = SimpleNamespace(list=lambda all, filters: list(containers))


def replica(index, status="running", pool="backend"):
    labels = {"tenfold.stack": "s", "tenfold.pool": pool, "tenfold.replica": str(index)}
    return SimpleNamespace(name=f"s-{pool}-{index}", labels=labels, status=status)


def test_exited_replicas_and_stray_copies_do_not_count_as_running():
    engine = FakeEngine(replica(3), replica(1), replica(2, "exited"), replica(0), replica(4, "restarting"))
    assert docker_utils.running_replicas(engine, "s", "backend") == [1, 3]


def test_members_of_a_pool_with_a_gap_are_its_running_replicas(monkeypatch):
    engine = FakeEngine(replica(3), replica(1), replica(2, "exited"))
    monkeypatch.setattr(info, "client", lambda docker_host: engine)
    params = {"stack": "s", "pools": [{"name": "backend", "port_base": 100}], "docker_host": None}
    found = info.read(
        {**params, "bind_address": "0.0.0.0", "advertise_address": "", "hosts": 1, "host_index": 0}
    )
    assert found == {
        "serving": {"backend": [1, 3]},
        "members": {
            "backend": [
                {"name": "s-backend-1", "replica": 1, "address": "127.0.0.1", "port": 101},
                {"name": "s-backend-3", "replica": 3, "address": "127.0.0.1", "port": 103},
            ]
        },
    }


def test_a_replica_placed_on_another_host_counts_but_is_no_member_here(monkeypatch):
    engine = FakeEngine(replica(1), replica(2), replica(3))
    monkeypatch.setattr(info, "client", lambda docker_host: engine)
    params = {"stack": "s", "pools": [{"name": "backend", "port_base": 100}], "docker_host": None}
    found = info.read(
        {**params, "bind_address": "10.0.0.2", "advertise_address": "", "hosts": 2, "host_index": 1}
    )
    assert found["serving"] == {"backend": [1, 2, 3]}
    assert [m["name"] for m in found["members"]["backend"]] == ["s-backend-2"]


POOLS = [
    {"name": "frontend", "min_replicas": 3, "max_replicas": 10},
    {"name": "backend", "min_replicas": 3, "max_replicas": 10},
]


def test_the_plan_starts_from_the_sizes_given():
    result = scale.scale_plan({"pools": POOLS, "direction": "up", "current": {"frontend": 4, "backend": 6}})
    assert result["targets"] == {"frontend": 5, "backend": 7}
    assert result["warnings"] == []


def test_a_pool_missing_from_the_sizes_has_no_replica():
    result = scale.scale_plan({"pools": POOLS, "pool": "backend", "replicas": 12, "current": {}})
    assert result["targets"] == {"frontend": 0, "backend": 10}
    assert [p["current"] for p in result["pools"]] == [0, 0]
    assert result["warnings"] == ["backend: 12 replicas asked, clamped to the maximum of 10"]


def test_a_size_that_is_not_a_number_is_refused():
    with pytest.raises(scale.ScaleRequestError, match="current must map pool names to whole numbers"):
        scale.scale_plan({"pools": POOLS, "direction": "up", "current": {"backend": "many"}})


def test_validate_only_needs_no_sizes():
    result = scale.scale_plan({"pools": POOLS, "direction": "up", "validate_only": True})
    assert result == {"changed": False, "pools": [], "targets": {}}
    with pytest.raises(scale.ScaleRequestError, match="direction must be"):
        scale.scale_plan({"pools": POOLS, "direction": "sideways", "validate_only": True})
