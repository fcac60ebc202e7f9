"""The pool reconcile plan and container spec: pure logic, no Docker."""

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import pool as tp


def spec(**overrides):
    values = {
        "stack": "s",
        "pool": "backend",
        "image_id": "sha256:abc",
        "container_port": 8080,
        "bind_address": "127.0.0.1",
        "port_base": 18200,
        "cpus": 1.0,
        "memory": tp.parse_memory("1g"),
        "reservation_ratio": 0.5,
    }
    values.update(overrides)
    return tp.PoolSpec(**values)


def replica(index, config_hash="h", running=True, name=None, warm=False):
    default = tp.warm_name("s", "backend", index) if warm else f"s-backend-{index}"
    return tp.Replica(name=name or default, index=index, config_hash=config_hash, running=running, warm=warm)


def hashes(count):
    return dict.fromkeys(range(1, count + 1), "h")


def test_empty_pool_creates_every_replica():
    result = tp.plan([], 3, {1: "h", 2: "h", 3: "h"})
    assert result.create == [1, 2, 3]
    assert result.changed


def test_converged_pool_plans_nothing():
    result = tp.plan([replica(1), replica(2), replica(3)], 3, {1: "h", 2: "h", 3: "h"})
    assert not result.changed
    assert result.keep == [1, 2, 3]


def test_scale_down_removes_highest_indexes_first():
    existing = [replica(i) for i in range(1, 8)]
    result = tp.plan(existing, 3, {1: "h", 2: "h", 3: "h"})
    assert result.remove == ["s-backend-7", "s-backend-6", "s-backend-5", "s-backend-4"]
    assert result.keep == [1, 2, 3]


def test_changed_config_recreates_only_that_replica():
    result = tp.plan([replica(1), replica(2, "old"), replica(3)], 3, {1: "h", 2: "h", 3: "h"})
    assert result.recreate == [2]
    assert result.keep == [1, 3]


def test_stopped_replica_is_started_not_recreated():
    result = tp.plan([replica(1, running=False)], 1, {1: "h"})
    assert result.start == [1]
    assert not result.create


def test_stray_duplicates_and_unnumbered_containers_are_removed():
    existing = [replica(1), replica(1, name="s-backend-1-previous"), replica(0, name="s-backend-x")]
    result = tp.plan(existing, 1, {1: "h"})
    assert sorted(result.remove) == ["s-backend-1-previous", "s-backend-x"]


def test_a_pool_keeps_its_warm_replicas_above_the_serving_ones():
    result = tp.plan([], 3, hashes(4), warm=1)
    assert result.create == [1, 2, 3, 4]
    assert [result.is_warm(i) for i in result.create] == [False, False, False, True]


def test_scale_up_promotes_the_warm_replica_and_starts_its_replacement():
    existing = [replica(1), replica(2), replica(3), replica(4, warm=True)]
    result = tp.plan(existing, 4, hashes(5), warm=1)
    assert result.promote == [4]
    assert result.create == [5] and result.is_warm(5)
    assert not result.remove


def test_scale_up_past_the_warm_ones_creates_the_rest_cold():
    existing = [replica(1), replica(2), replica(3), replica(4, warm=True)]
    result = tp.plan(existing, 6, hashes(7), warm=1)
    assert result.promote == [4]
    assert result.create == [5, 6, 7]


def test_the_first_step_of_a_scale_up_leaves_the_replacements_for_later():
    existing = [replica(1), replica(2), replica(3), replica(4, warm=True)]
    first = tp.plan(existing, 5, hashes(6), warm=1).without_new_warm()
    assert first.promote == [4]
    assert first.create == [5]


def test_scale_down_demotes_the_drained_replica_and_removes_the_warm_ones_above():
    existing = [replica(i) for i in range(1, 6)] + [replica(6, warm=True)]
    result = tp.plan(existing, 3, hashes(4), warm=1)
    assert result.demote == [4]
    assert result.remove == ["s-backend-6-warm", "s-backend-5"]
    assert result.keep == [1, 2, 3, 4]


def test_a_warm_replica_with_an_old_config_is_recreated_as_warm():
    existing = [replica(1), replica(2, warm=True, config_hash="old")]
    result = tp.plan(existing, 1, hashes(2), warm=1)
    assert result.recreate == [2] and result.is_warm(2)
    assert not result.promote


def test_for_one_slot_the_container_already_in_its_state_wins():
    existing = [replica(1), replica(2, warm=True), replica(2)]
    result = tp.plan(existing, 1, hashes(2), warm=1)
    assert result.remove == ["s-backend-2"]
    assert not result.demote and result.keep == [1, 2]


def test_warm_replicas_count_toward_the_maximum():
    assert tp.warm_count(3, 1, 10) == 1
    assert tp.warm_count(9, 2, 10) == 1
    assert tp.warm_count(10, 1, 10) == 0
    assert tp.warm_count(0, 1, 10) == 0


def test_a_warm_replica_differs_from_its_serving_self_only_in_its_name():
    warm, serving = spec().container_config(4, warm=True), spec().container_config(4)
    assert warm.pop("name") == "s-backend-4-warm"
    assert serving.pop("name") == "s-backend-4"
    assert warm == serving


def test_negative_replicas_is_an_error():
    with pytest.raises(tp.PoolError, match="0 or more"):
        tp.plan([], -1, {})


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * 1024**2),
        ("1g", 1024**3),
        ("1G", 1024**3),
        ("64mb", 64 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
    ],
)
def test_memory_sizes_parse(text, size):
    assert tp.parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "512x", "-1m", "1k"])
def test_bad_memory_sizes_are_rejected(text):
    with pytest.raises(tp.PoolError):
        tp.parse_memory(text)


@pytest.mark.parametrize("name", ["", "Tenfold", "a b", "-x", "x" * 64, "a/b"])
def test_bad_names_are_rejected(name):
    with pytest.raises(tp.PoolError, match="not a valid name"):
        tp.check_name("stack", name)


def test_container_config_carries_limits_reservations_and_hardening():
    config = spec().container_config(2)
    assert config["name"] == "s-backend-2"
    assert config["nano_cpus"] == 1_000_000_000
    assert config["mem_limit"] == 1024**3
    assert config["mem_reservation"] == 512 * 1024**2
    assert config["cpu_shares"] == 512
    assert config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges:true"]
    assert config["user"] == "10001"
    assert config["ports"] == {"8080/tcp": ("127.0.0.1", 18202)}
    assert config["labels"] == {"tenfold.stack": "s", "tenfold.pool": "backend", "tenfold.replica": "2"}
    assert config["healthcheck"]["test"][0] == "CMD"


def test_config_hash_changes_with_image_and_limits_but_not_between_runs():
    base = spec()
    assert base.config_hash(1) == spec().config_hash(1)
    assert base.config_hash(1) != spec(image_id="sha256:def").config_hash(1)
    assert base.config_hash(1) != spec(memory=tp.parse_memory("2g")).config_hash(1)
    assert base.config_hash(1) != base.config_hash(2)


def test_members_point_at_published_ports():
    assert tp.member(spec(), 3, "10.0.0.5") == {
        "name": "s-backend-3",
        "replica": 3,
        "address": "10.0.0.5",
        "port": 18203,
    }
    assert tp.probe_address("0.0.0.0") == "127.0.0.1"
    assert tp.probe_address("192.168.1.4") == "192.168.1.4"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_drain_waits_for_in_flight_requests_to_finish():
    clock = FakeClock()
    readings = {"a": iter([3, 2, 0, 0, 0]), "b": iter([0, 0, 0, 0, 0])}
    results = tp.drain(["a", "b"], lambda n: next(readings[n]), timeout=10, clock=clock, sleep=clock.sleep)
    assert [(r.name, r.drained) for r in results] == [("a", True), ("b", True)]
    assert results[0].waited_s > results[1].waited_s


def test_drain_gives_up_at_the_timeout_and_says_which_replica_is_busy():
    clock = FakeClock()
    results = tp.drain(["busy"], lambda n: 5, timeout=3, clock=clock, sleep=clock.sleep)
    assert not results[0].drained
    assert results[0].last_inflight == 5
    assert clock.now <= 3.5


def test_unreachable_replica_counts_as_idle():
    clock = FakeClock()
    results = tp.drain(["gone"], lambda n: None, timeout=3, clock=clock, sleep=clock.sleep)
    assert results[0].drained


def test_a_zero_between_busy_readings_is_not_enough():
    clock = FakeClock()
    readings = iter([0, 4, 0, 0])
    results = tp.drain(["a"], lambda n: next(readings), timeout=10, clock=clock, sleep=clock.sleep)
    assert results[0].drained and clock.now >= 1.5


def test_a_pool_over_two_hosts_places_replicas_in_turn():
    # 5 serving + 1 warm over two hosts: host 0 runs 1, 3, 5; host 1 runs 2, 4 and the warm 6
    first = tp.plan([], 5, hashes(6), warm=1, hosts=2, host_index=0)
    second = tp.plan([], 5, hashes(6), warm=1, hosts=2, host_index=1)
    assert first.create == [1, 3, 5]
    assert second.create == [2, 4, 6]
    assert second.is_warm(6)


def test_growing_a_pool_over_hosts_moves_no_replica():
    here = [replica(2), replica(4, warm=True)]
    result = tp.plan(here, 4, hashes(5), warm=1, hosts=2, host_index=1)
    assert result.promote == [4]
    assert result.keep == [2, 4]
    assert not result.remove and not result.create


def test_replicas_placed_on_another_host_are_removed_here():
    # this host ran the whole pool while the other was lost; with both back it keeps its share only
    here = [replica(i) for i in range(1, 5)]
    result = tp.plan(here, 4, hashes(4), hosts=2, host_index=0)
    assert result.keep == [1, 3]
    assert result.remove == ["s-backend-4", "s-backend-2"]


@pytest.mark.parametrize(("hosts", "host_index"), [(0, 0), (2, 2), (2, -1)])
def test_a_place_outside_the_hosts_is_refused(hosts, host_index):
    with pytest.raises(tp.PoolError, match="host_index must be within"):
        tp.plan([], 3, hashes(3), hosts=hosts, host_index=host_index)


def test_each_replica_is_placed_on_exactly_one_host():
    for hosts in range(1, 5):
        for index in range(1, 20):
            assert sum(tp.placed_here(index, hosts, h) for h in range(hosts)) == 1
