"""The tenfold_upstreams filter merges the Docker hosts' members into nginx upstream lists."""

from tenfold import tenfold_upstreams


def members(address, pool, ports):
    return [{"name": f"x-{i}", "replica": i, "address": address, "port": p} for i, p in ports]


def test_members_of_several_hosts_are_merged_in_inventory_then_replica_order():
    hostvars = {
        "a": {"app_pools_members": {"backend": members("10.0.0.1", "backend", [(2, 18202), (1, 18201)])}},
        "b": {"app_pools_members": {"backend": members("10.0.0.2", "backend", [(1, 18201)])}},
    }
    assert tenfold_upstreams(["a", "b"], hostvars) == {
        "backend": ["10.0.0.1:18201", "10.0.0.1:18202", "10.0.0.2:18201"]
    }


def test_hosts_without_members_contribute_nothing():
    assert tenfold_upstreams(["a"], {"a": {}}) == {}
    assert tenfold_upstreams([], {}) == {}
