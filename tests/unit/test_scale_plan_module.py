"""tenfold_scale_plan's reading of the engine: only running replicas count, by their own indexes."""

from types import SimpleNamespace

from conftest import load_plugin

mod = load_plugin("modules", "tenfold_scale_plan")
docker_utils = __import__("ansible.module_utils.tenfold_docker", fromlist=["running_replicas"])


class FakeEngine:
    def __init__(self, *containers):
        self.containers = SimpleNamespace(list=lambda all, filters: list(containers))


def replica(index, status="running", pool="backend"):
    labels = {"tenfold.stack": "s", "tenfold.pool": pool, "tenfold.replica": str(index)}
    return SimpleNamespace(name=f"s-{pool}-{index}", labels=labels, status=status)


def test_exited_replicas_and_stray_copies_do_not_count_as_running():
    engine = FakeEngine(replica(3), replica(1), replica(2, "exited"), replica(0), replica(4, "restarting"))
    assert docker_utils.running_replicas(engine, "s", "backend") == [1, 3]


def test_members_of_a_pool_with_a_gap_are_its_running_replicas():
    items = [{"name": "backend", "port_base": 100}, {"name": "frontend"}]
    members = mod.current_members("s", items, {"backend": [1, 3], "frontend": [1]}, "127.0.0.1")
    assert members == {
        "backend": [
            {"name": "s-backend-1", "replica": 1, "address": "127.0.0.1", "port": 101},
            {"name": "s-backend-3", "replica": 3, "address": "127.0.0.1", "port": 103},
        ]
    }
