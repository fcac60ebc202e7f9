"""The stack's state host and directory: the defaults, and bad values refused naming the variable."""

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import state as ts

GROUPS = {"all": ["lb1", "lb2", "d1"], "tenfold_lb": ["lb1", "lb2"], "tenfold_docker": ["d1"]}
CONNECTIONS = {"lb1": "ssh", "lb2": None, "d1": "ssh"}


def test_the_state_is_on_the_first_lb_host_in_the_stacks_directory_by_default():
    state = ts.resolve("web", None, "", GROUPS, CONNECTIONS)
    assert (state.host, state.dir, state.local) == ("lb1", "/var/lib/tenfold/web/scale", False)
    assert state.lock == "/var/lib/tenfold/web/scale/scale.lock"
    assert state.events == "/var/lib/tenfold/web/scale/scale-events.jsonl"


def test_a_state_host_reached_with_connection_local_is_this_machine():
    state = ts.resolve(
        "tenfold", "", None, {"all": ["localhost"], "tenfold_lb": ["localhost"]}, {"localhost": "local"}
    )
    assert (state.host, state.local) == ("localhost", True)


def test_the_state_host_and_directory_can_be_chosen():
    state = ts.resolve("web", "d1", "/srv/tenfold//state/", GROUPS, CONNECTIONS)
    assert (state.host, state.dir) == ("d1", "/srv/tenfold/state")
    assert state.as_dict() == {
        "host": "d1",
        "dir": "/srv/tenfold/state",
        "local": False,
        "lock": "/srv/tenfold/state/scale.lock",
        "events": "/srv/tenfold/state/scale-events.jsonl",
    }


@pytest.mark.parametrize(
    ("host", "directory", "message"),
    [
        (
            "nohost",
            "",
            "tenfold_state_host='nohost' is not a host of the inventory (its hosts: lb1, lb2, d1)",
        ),
        (["lb1"], "", "tenfold_state_host=['lb1'] is not a host of the inventory"),
        (None, "logs/state", "tenfold_state_dir='logs/state' must be an absolute path"),
        (None, "/var/lib/../etc", "tenfold_state_dir='/var/lib/../etc' must not hold '..'"),
        (None, "/", "tenfold_state_dir='/' would put the stack's lock and events in the root directory"),
        (None, "/var/lib/x\ny", "must not hold control characters"),
        (None, 42, "tenfold_state_dir=42 must be an absolute path"),
    ],
)
def test_a_bad_state_host_or_directory_is_refused_naming_the_variable(host, directory, message):
    with pytest.raises(ts.StateError) as error:
        ts.resolve("web", host, directory, GROUPS, CONNECTIONS)
    assert message in str(error.value)


def test_without_an_lb_host_the_state_host_must_be_set():
    with pytest.raises(ts.StateError, match="tenfold_state_host is not set and group tenfold_lb has no host"):
        ts.resolve("web", None, None, {"all": ["d1"]}, {})
