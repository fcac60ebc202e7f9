"""Scale requests: parsing the extra vars and the clamped target of each pool."""

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import scale as ts

POOLS = ["frontend", "backend"]
BOUNDS = ts.Bounds(min_replicas=3, max_replicas=10)


@pytest.mark.parametrize(
    ("pool", "direction", "step", "replicas", "expected"),
    [
        (None, "up", None, None, (POOLS, "up", 1, None)),
        ("backend", "down", "2", None, (["backend"], "down", 2, None)),
        ("backend", None, None, "7", (["backend"], None, 0, 7)),
        ("frontend", None, None, 4, (["frontend"], None, 0, 4)),
        (None, None, None, {"backend": "4", "frontend": 3}, (POOLS, None, 0, {"frontend": 3, "backend": 4})),
        (None, None, None, {"backend": 5}, (["backend"], None, 0, {"backend": 5})),
    ],
)
def test_valid_requests_parse(pool, direction, step, replicas, expected):
    assert ts.parse_request(POOLS, pool, direction, step, replicas) == expected


@pytest.mark.parametrize(
    ("pool", "direction", "step", "replicas", "message"),
    [
        (None, "sideways", None, None, "direction must be 'up' or 'down'"),
        (None, "up", "0", None, "step must be 1 or more"),
        (None, "up", "-1", None, "step must be 1 or more"),
        (None, "up", "abc", None, "step must be a whole number"),
        ("backend", None, None, "abc", "replicas must be a whole number"),
        ("backend", None, None, "-1", "replicas must be 0 or more"),
        ("unknown", "up", None, None, "not a pool of this stack"),
        (None, None, None, "5", "replicas needs pool"),
        (None, None, None, None, "say what to do"),
        ("backend", "up", None, "5", "not both"),
        ("backend", None, None, "2.5", "replicas must be a whole number"),
        (None, "up", True, None, "step must be a whole number"),
        (None, None, None, {}, "replicas per pool is empty"),
        (None, None, None, {"web": 3}, "web: not a pool of this stack"),
        (None, None, None, {"backend": "x"}, "replicas.backend must be a whole number"),
        (None, None, None, {"backend": -2}, "replicas.backend must be 0 or more"),
        ("backend", None, None, {"backend": 3}, "takes neither pool nor direction"),
        (None, "up", None, {"backend": 3}, "takes neither pool nor direction"),
    ],
)
def test_malformed_requests_are_rejected_with_a_clear_message(pool, direction, step, replicas, message):
    with pytest.raises(ts.ScaleRequestError, match=message):
        ts.parse_request(POOLS, pool, direction, step, replicas)


@pytest.mark.parametrize(
    ("current", "direction", "step", "replicas", "target", "clamped"),
    [
        (3, "up", 1, None, 4, False),
        (3, "up", 7, None, 10, False),
        (9, "up", 4, None, 10, True),
        (10, "up", 1, None, 10, True),
        (4, "down", 1, None, 3, False),
        (3, "down", 1, None, 3, True),
        (5, None, 0, 7, 7, False),
        (5, None, 0, 20, 10, True),
        (5, None, 0, 1, 3, True),
        (5, None, 0, 5, 5, False),
    ],
)
def test_targets_are_clamped_to_the_bounds_and_say_so(current, direction, step, replicas, target, clamped):
    result = ts.target_for("backend", current, BOUNDS, direction, step, replicas)
    assert (result.target, result.clamped) == (target, clamped)
    if clamped:
        assert "clamped" in result.message


def test_direction_of_a_target():
    assert ts.target_for("b", 3, BOUNDS, "up", 2, None).direction == "up"
    assert ts.target_for("b", 5, BOUNDS, "down", 2, None).direction == "down"
    assert ts.target_for("b", 3, BOUNDS, "down", 1, None).direction == "none"


def test_invalid_bounds_are_an_error():
    with pytest.raises(ts.ScaleRequestError, match="not a valid range"):
        ts.target_for("b", 3, ts.Bounds(5, 4), "up", 1, None)


def test_expect_current_is_a_whole_number_with_one_pool_and_its_replicas():
    assert ts.parse_expected("3", ["backend"], "4") == 3
    assert ts.parse_expected("", ["backend"], "4") is None
    for expected, chosen, replicas, message in [
        ("x", ["backend"], "4", "expect_current must be a whole number, got 'x'"),
        ("-1", ["backend"], "4", "expect_current must be 0 or more, got -1"),
        ("3", POOLS, None, "expect_current goes with one pool and its replicas"),
        ("3", ["backend"], {"backend": 4}, "expect_current goes with one pool and its replicas"),
    ]:
        with pytest.raises(ts.ScaleRequestError, match=message):
            ts.parse_expected(expected, chosen, replicas)


def test_a_request_planned_on_another_size_changes_nothing_and_says_why():
    target = ts.stale_target("backend", 8, 3)
    assert (target.current, target.target, target.direction) == (8, 8, "none")
    assert "planned at 3 replicas, the pool has 8 now" in target.message
