"""The pure parts of the LB's members client (module_utils lb) and of tenfold.stack.lb_members: checking
members, planning a pool's set, comparing and describing sets, reading the LB's answer."""

from __future__ import annotations

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import lb as tenfold_lb

Member, LbError, wanted_members = tenfold_lb.Member, tenfold_lb.LbError, tenfold_lb.wanted_members


def raw(i: int, port: int | None = None, **extra) -> dict:
    return {
        "id": f"mol-backend-{i}",
        "address": "127.0.0.1",
        "port": 18200 + i if port is None else port,
        **extra,
    }


# --- check_member ---------------------------------------------------------------------------------
def test_a_good_member_is_checked_into_a_member():
    assert tenfold_lb.check_member(raw(1), "backend[0]") == Member("mol-backend-1", "127.0.0.1", 18201)
    assert tenfold_lb.check_member(raw(1, state="x"), "p").state == "active"  # state comes from the caller


def test_name_stands_for_id_and_ports_and_host_names_are_accepted():
    member = tenfold_lb.check_member({"name": "r-1", "address": "lb.example", "port": "8080"}, "p[0]")
    assert member == Member("r-1", "lb.example", 8080, "active")
    assert tenfold_lb.check_member({**raw(1), "name": "other"}, "p").id == "mol-backend-1"  # id wins


def test_draining_state_is_kept():
    assert tenfold_lb.check_member(raw(2), "p", state="draining").state == "draining"


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("mol-backend-1", r"^backend\[3\]: 'mol-backend-1' must be a mapping"),
        ({"address": "127.0.0.1", "port": 1}, r"^backend\[3\]: id None must be"),
        ({**raw(1), "id": ""}, r"^backend\[3\]: id '' must be"),
        ({**raw(1), "id": "-lead"}, r"^backend\[3\]: id '-lead' must be"),
        ({**raw(1), "id": "a" * 64}, r"^backend\[3\]: id 'a{64}' must be 1-63"),
        ({**raw(1), "id": "bad|id"}, r"^backend\[3\]: id 'bad\|id' must be"),
        ({**raw(1), "id": 7}, r"^backend\[3\]: id 7 must be"),
        (
            {**raw(1), "address": "127.0.0.1:9"},
            r"^backend\[3\]: address '127.0.0.1:9' of mol-backend-1 must be",
        ),
        ({**raw(1), "address": "::1"}, r"^backend\[3\]: address '::1' of mol-backend-1 must be an IPv4"),
        ({**raw(1), "address": "a b"}, r"address 'a b' of mol-backend-1"),
        ({**raw(1), "address": None}, r"address None of mol-backend-1"),
        (
            {**raw(1), "port": 0},
            r"^backend\[3\]: port 0 of mol-backend-1 must be a whole number from 1 to 65535",
        ),
        ({**raw(1), "port": 65536}, r"port 65536 of mol-backend-1"),
        ({**raw(1), "port": "80x"}, r"port '80x' of mol-backend-1"),
        ({**raw(1), "port": -1}, r"port -1 of mol-backend-1"),
        ({**raw(1), "port": True}, r"port True of mol-backend-1"),
        ({**raw(1), "port": 80.0}, r"port 80.0 of mol-backend-1"),
        ({"id": "mol-backend-1", "address": "127.0.0.1"}, r"port None of mol-backend-1"),
    ],
)
def test_a_bad_field_fails_naming_where_and_what(member, message):
    with pytest.raises(LbError, match=message):
        tenfold_lb.check_member(member, "backend[3]")


def test_a_bad_state_fails_naming_where():
    with pytest.raises(
        LbError, match=r"^backend\[0\]: state 'gone' of mol-backend-1 must be one of active, draining"
    ):
        tenfold_lb.check_member(raw(1), "backend[0]", state="gone")


# --- plan -----------------------------------------------------------------------------------------
def test_plan_lists_active_then_draining_members():
    planned = tenfold_lb.plan("backend", [raw(1), raw(2)], [raw(3)])
    assert [(m.id, m.state) for m in planned] == [
        ("mol-backend-1", "active"),
        ("mol-backend-2", "active"),
        ("mol-backend-3", "draining"),
    ]


def test_draining_overrides_active_for_the_same_id():
    planned = tenfold_lb.plan("backend", [raw(1), raw(2)], [raw(2)])
    assert [(m.id, m.state) for m in planned] == [("mol-backend-1", "active"), ("mol-backend-2", "draining")]


def test_an_id_listed_twice_is_kept_once_with_its_last_entry():
    planned = tenfold_lb.plan("backend", [raw(1), raw(1, port=18299)])
    assert planned == [Member("mol-backend-1", "127.0.0.1", 18299)]


def test_two_members_at_one_endpoint_are_refused():
    with pytest.raises(LbError, match=r"^backend: more than one member at 127.0.0.1:18201$"):
        tenfold_lb.plan("backend", [raw(1), {**raw(2), "port": 18201}])
    with pytest.raises(LbError, match=r"more than one member at 127.0.0.1:18201"):
        tenfold_lb.plan("backend", [raw(1)], [{**raw(2), "port": 18201}])


def test_plan_names_the_bad_entry():
    with pytest.raises(LbError, match=r"^backend\[1\]: port 0 of mol-backend-2"):
        tenfold_lb.plan("backend", [raw(1), raw(2, port=0)])
    with pytest.raises(LbError, match=r"^backend draining\[0\]: address 'nowhere!' of mol-backend-3"):
        tenfold_lb.plan("backend", [raw(1)], [{**raw(3), "address": "nowhere!"}])


def test_an_empty_pool_plans_no_members():
    assert tenfold_lb.plan("frontend", []) == []


# --- same and describe ----------------------------------------------------------------------------
def test_same_ignores_order_but_not_state_or_endpoint():
    a, b = Member("a", "127.0.0.1", 1), Member("b", "127.0.0.1", 2)
    assert tenfold_lb.same([a, b], [b, a])
    assert tenfold_lb.same([], [])
    assert not tenfold_lb.same([a, b], [a])
    assert not tenfold_lb.same([a], [Member("a", "127.0.0.1", 1, "draining")])
    assert not tenfold_lb.same([a], [Member("a", "127.0.0.2", 1)])
    assert not tenfold_lb.same([a], [Member("a", "127.0.0.1", 3)])


def test_describe_lists_one_member_a_line_by_id():
    members = [Member("b", "127.0.0.1", 2, "draining"), Member("a", "127.0.0.1", 1)]
    assert tenfold_lb.describe(members) == "a 127.0.0.1:1 active\nb 127.0.0.1:2 draining\n"
    assert tenfold_lb.describe([]) == ""


def test_a_member_as_the_api_takes_it():
    member = Member("a", "127.0.0.1", 1)
    assert member.as_dict() == {"id": "a", "address": "127.0.0.1", "port": 1, "state": "active"}
    assert member.endpoint == "127.0.0.1:1"


# --- parse_pool -----------------------------------------------------------------------------------
def test_parse_pool_reads_generation_members_and_inflight():
    body = {
        "pool": "backend",
        "generation": 4,
        "members": [
            {
                "id": "b-1",
                "address": "127.0.0.1",
                "port": 18201,
                "state": "active",
                "inflight": 2,
                "failing": False,
            },
            {"id": "b-2", "address": "127.0.0.1", "port": "18202", "state": "draining"},
        ],
    }
    generation, members, inflight = tenfold_lb.parse_pool(body)
    assert generation == 4
    assert members == [Member("b-1", "127.0.0.1", 18201), Member("b-2", "127.0.0.1", 18202, "draining")]
    assert inflight == {"b-1": 2, "b-2": 0}


def test_parse_pool_of_an_empty_pool():
    assert tenfold_lb.parse_pool({"generation": 0, "members": []}) == (0, [], {})


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "oops",
        {},
        {"generation": 1},
        {"members": []},
        {"generation": "x", "members": []},
        {"generation": 1, "members": None},
        {"generation": 1, "members": [{"id": "b-1", "address": "127.0.0.1", "port": 1}]},
        {"generation": 1, "members": [{"id": "b-1", "address": "127.0.0.1", "port": "p", "state": "active"}]},
        {"generation": 1, "members": ["b-1"]},
        {"error": "no pool x"},
    ],
)
def test_parse_pool_refuses_a_malformed_answer(body):
    with pytest.raises(LbError, match="the LB's answer is not a pool's members"):
        tenfold_lb.parse_pool(body)


def test_a_malformed_answer_is_quoted_shortly():
    with pytest.raises(LbError) as failure:
        tenfold_lb.parse_pool({"generation": "x" * 1000, "members": []})
    assert len(str(failure.value)) < 300


# --- wanted_members -------------------------------------------------------------------------------
def params(pools: dict, draining: dict | None = None) -> dict:
    return {"url": "http://127.0.0.1:9", "pools": pools, "draining": draining or {}, "timeout": 1.0}


def test_wanted_members_plans_each_pool():
    wanted = wanted_members(params({"backend": [raw(1)], "frontend": []}, {"backend": [raw(2)]}))
    assert wanted == {
        "backend": [
            Member("mol-backend-1", "127.0.0.1", 18201),
            Member("mol-backend-2", "127.0.0.1", 18202, "draining"),
        ],
        "frontend": [],
    }


def test_wanted_members_resolves_host_names_to_ipv4():
    [member] = wanted_members(params({"backend": [{**raw(1), "address": "localhost"}]}))["backend"]
    assert member == Member("mol-backend-1", "127.0.0.1", 18201)


def test_draining_a_pool_that_pools_does_not_name_is_refused():
    with pytest.raises(LbError, match=r"^draining names pools that pools does not: api, other$"):
        wanted_members(params({"backend": [raw(1)]}, {"other": [raw(2)], "api": [], "backend": []}))


@pytest.mark.parametrize(
    ("pools", "draining"),
    [({"backend": {"id": "x"}}, {}), ({"backend": "mol-backend-1"}, {}), ({"backend": []}, {"backend": {}})],
)
def test_members_that_are_not_a_list_are_refused(pools, draining):
    with pytest.raises(LbError, match=r"^backend: the members must be a list$"):
        wanted_members(params(pools, draining))


def test_a_bad_member_fails_before_anything_is_resolved():
    with pytest.raises(LbError, match=r"^backend\[1\]: id"):
        wanted_members(params({"backend": [{**raw(1), "address": "no-such-host.invalid"}, {"port": 1}]}))
