"""A lost Docker host: its members that do not answer are set draining, those that answer are kept."""

from __future__ import annotations

from ansible_collections.tenfold.stack.plugins.module_utils.lb import LbError, Member
from tenfold_monitor.engines import EngineHost
from tenfold_monitor.lost import drain_lost, host_address


class FakeLb:
    """The members API's two calls, for the logic around them."""

    def __init__(self, members: list[Member], refuse: bool = False) -> None:
        self.members, self.generation, self.refuse, self.writes = members, 7, refuse, []

    def pool(self, pool: str):
        return self.generation, list(self.members), {}

    def replace(self, pool: str, generation: int, members: list[Member]) -> int:
        if self.refuse:
            raise LbError("generation 7 is stale")
        self.writes.append((pool, generation, members))
        return generation + 1


def test_only_silent_members_at_a_lost_hosts_address_are_drained():
    members = [
        Member("s-backend-1", "10.0.0.11", 18201),
        Member("s-backend-2", "10.0.0.12", 18202),
        Member("s-backend-3", "10.0.0.11", 18203),
        Member("s-backend-5", "10.0.0.11", 18205, "draining"),
    ]
    lb = FakeLb(members)
    silent = {"10.0.0.11:18201"}
    assert drain_lost(lb, ["backend"], ["10.0.0.11"], healthy=lambda e: e not in silent) == ["s-backend-1"]
    [(pool, generation, written)] = lb.writes
    assert (pool, generation) == ("backend", 7)
    assert [(m.id, m.state) for m in written] == [
        ("s-backend-1", "draining"),
        ("s-backend-2", "active"),
        ("s-backend-3", "active"),  # it still answers: only the host's engine is out of reach
        ("s-backend-5", "draining"),
    ]


def test_nothing_is_written_when_every_member_answers_or_the_lb_refuses():
    members = [Member("s-backend-1", "10.0.0.11", 18201)]
    lb = FakeLb(members)
    assert drain_lost(lb, ["backend"], ["10.0.0.11"], healthy=lambda e: True) == []
    assert lb.writes == []
    refusing = FakeLb(members, refuse=True)
    assert drain_lost(refusing, ["backend"], ["10.0.0.11"], healthy=lambda e: False) == []


def test_a_hosts_address_is_the_one_in_its_engine_url():
    assert host_address(EngineHost("d1", "ssh://root@10.0.0.11")) == "10.0.0.11"
    assert host_address(EngineHost("d1", "ssh://deploy@app1.internal:2222")) == "app1.internal"
    assert host_address(EngineHost("d3", "tcp://10.0.0.13:2376")) == "10.0.0.13"
    assert host_address(EngineHost("here", "")) is None
    assert host_address(EngineHost("here", "unix:///run/docker.sock")) is None
