"""The LB's filters: tenfold.stack.members merges the Docker hosts' replicas into the LB's members per pool,
and tenfold.stack.seconds turns an nginx time into the seconds the Lua balancer reads."""

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_plugin

pools = load_plugin("filter", "pools")
FilterModule, docker_hosts, members = pools.FilterModule, pools.docker_hosts, pools.members
pool_sizes, seconds = pools.pool_sizes, pools.seconds


def replicas(prefix, address, ports):
    return [{"name": f"{prefix}-{i}", "replica": i, "address": address, "port": p} for i, p in ports]


def test_members_of_several_hosts_are_merged_in_host_then_replica_order():
    hostvars = {
        "a": {"app_pools_members": {"backend": replicas("a-backend", "10.0.0.1", [(2, 18202), (1, 18201)])}},
        "b": {"app_pools_members": {"backend": replicas("b-backend", "10.0.0.2", [(1, 18201)])}},
    }
    assert members(["b", "a"], hostvars) == {
        "backend": [
            {"id": "b-backend-1", "address": "10.0.0.2", "port": 18201},
            {"id": "a-backend-1", "address": "10.0.0.1", "port": 18201},
            {"id": "a-backend-2", "address": "10.0.0.1", "port": 18202},
        ]
    }


def test_replicas_are_ordered_by_their_index_as_a_number_and_ports_become_integers():
    pool = [
        {"name": "x-10", "replica": "10", "address": "10.0.0.1", "port": "18210"},
        {"name": "x-9", "replica": 9, "address": "10.0.0.1", "port": 18209},
    ]
    assert members(["a"], {"a": {"app_pools_members": {"frontend": pool}}}) == {
        "frontend": [
            {"id": "x-9", "address": "10.0.0.1", "port": 18209},
            {"id": "x-10", "address": "10.0.0.1", "port": 18210},
        ]
    }


def test_each_pool_is_kept_apart_and_only_id_address_and_port_are_kept():
    hostvars = {
        "a": {
            "app_pools_members": {
                "frontend": [{**replicas("f", "10.0.0.1", [(1, 18101)])[0], "container": "c1"}],
                "backend": replicas("b", "10.0.0.1", [(1, 18201)]),
            }
        }
    }
    assert members(["a"], hostvars) == {
        "frontend": [{"id": "f-1", "address": "10.0.0.1", "port": 18101}],
        "backend": [{"id": "b-1", "address": "10.0.0.1", "port": 18201}],
    }


def test_the_fact_parameter_reads_another_fact():
    hostvars = {
        "a": {
            "app_pools_members": {"backend": replicas("b", "10.0.0.1", [(1, 18201), (2, 18202)])},
            "app_pools_leaving": {"backend": replicas("b", "10.0.0.1", [(3, 18203)])},
        }
    }
    assert members(["a"], hostvars, "app_pools_leaving") == {
        "backend": [{"id": "b-3", "address": "10.0.0.1", "port": 18203}]
    }
    assert members(["a"], hostvars, fact="app_pools_leaving") == members(["a"], hostvars, "app_pools_leaving")
    assert members(["a"], hostvars, fact="no_such_fact") == {}


def test_hosts_without_the_fact_contribute_nothing():
    hostvars = {
        "a": {},
        "b": {"app_pools_members": None},
        "c": {"app_pools_members": {"backend": replicas("c", "10.0.0.3", [(1, 18201)])}},
    }
    assert members(["a", "b", "missing", "c"], hostvars) == {
        "backend": [{"id": "c-1", "address": "10.0.0.3", "port": 18201}]
    }
    assert members(["a"], {"a": {}}) == {}
    assert members([], {}) == {}
    assert members(None, {}) == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10s", 10),
        ("500ms", 0.5),
        ("1m30s", 90),
        ("5", 5),
        (5, 5),
        ("1h", 3600),
        ("1d", 86400),
        ("1m500ms", 60.5),
        (" 10s ", 10),
    ],
)
def test_seconds_of_an_nginx_time(value, expected):
    assert seconds(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "ten", "10 s", "10x", "s", "-5", "1.5s", "10s;", "1m 30s", None])
def test_seconds_of_anything_else_fail_naming_the_value(value):
    with pytest.raises(AnsibleFilterError, match="is not an nginx time"):
        seconds(value)


def test_both_filters_are_registered():
    filters = FilterModule().filters()
    assert filters["members"] is members
    assert filters["seconds"] is seconds


def test_pool_sizes_count_distinct_serving_replicas_across_hosts():
    hostvars = {
        "a": {"app_pools_found": {"serving": {"backend": [1, 3], "frontend": [1]}}},
        "b": {"app_pools_found": {"serving": {"backend": [2, 4], "frontend": []}}},
        # a host back from a cut still runs replica 1, now also placed on a: it counts once
        "c": {"app_pools_found": {"serving": {"backend": [1]}}},
        "unread": {},
    }
    assert pool_sizes(["a", "b", "c", "unread"], hostvars) == {"backend": 4, "frontend": 1}
    assert pool_sizes(["b"], hostvars) == {"backend": 2, "frontend": 0}
    assert pool_sizes([], hostvars) == {}
    assert FilterModule().filters()["pool_sizes"] is pool_sizes


def test_docker_hosts_are_reached_locally_or_as_ansible_reaches_them():
    hostvars = {
        "lb": {"ansible_host": "10.0.0.10"},
        "d1": {"ansible_host": "10.0.0.11", "ansible_user": "deploy", "ansible_port": 2222},
        "d2": {"ansible_host": "10.0.0.12"},
        "d3": {"tenfold_docker_url": "tcp://10.0.0.13:2376"},
        "here": {"ansible_connection": "local"},
    }
    assert docker_hosts(["lb", "d1", "d2", "d3", "here"], hostvars, "lb") == [
        {"name": "lb", "url": ""},
        {"name": "d1", "url": "ssh://deploy@10.0.0.11:2222"},
        {"name": "d2", "url": "ssh://10.0.0.12"},
        {"name": "d3", "url": "tcp://10.0.0.13:2376"},
        {"name": "here", "url": ""},
    ]
    assert docker_hosts([], hostvars, "lb") == []
