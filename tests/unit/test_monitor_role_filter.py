"""The monitor role's filters: the monitor's objections to its settings, named by the role's variables."""

from __future__ import annotations

import yaml
from ansible_collections.tenfold.stack.plugins.module_utils import policy
from conftest import COLLECTION, load_plugin

ROLE = COLLECTION / "roles" / "monitor"
filters = load_plugin("filter", "monitor")

ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
SETTING_VARS = ROLE_VARS["__monitor_settings_vars"]
POLICY_VARS = ROLE_VARS["__monitor_policy_vars"]


def problems(*items: tuple[list[str], str], pools: dict | None = None) -> list[str]:
    check = {"problems": [{"settings": settings, "message": message} for settings, message in items]}
    return filters.monitor_problems(check, pools or {}, SETTING_VARS, POLICY_VARS)


def test_every_policy_field_has_a_role_variable_with_a_default():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    fields = {f.name for f in policy.PolicyConfig.__dataclass_fields__.values()}
    assert set(POLICY_VARS) == fields - {"min_replicas", "max_replicas"}
    assert set(POLICY_VARS.values()) <= set(defaults)
    assert set(SETTING_VARS.values()) - {"tenfold_state_dir"} <= set(defaults)


def test_a_pools_own_entry_is_named_over_the_shared_variable():
    pools = {"backend": {"cpu_trigger": -5}, "frontend": {}}
    assert problems((["pools.backend.cpu_trigger"], "cpu_trigger must be a number above 0"), pools=pools) == [
        "monitor_pools.backend.cpu_trigger: cpu_trigger must be a number above 0"
    ]
    assert problems(
        (["pools.frontend.cpu_trigger"], "cpu_trigger must be a number above 0"), pools=pools
    ) == ["monitor_cpu_trigger: cpu_trigger must be a number above 0"]


def test_a_problem_of_every_pool_is_said_once():
    message = "tolerance must be below 1, got 2"
    assert problems((["pools.frontend.tolerance"], message), (["pools.backend.tolerance"], message)) == [
        f"monitor_tolerance: {message}"
    ]


def test_settings_are_named_by_their_variables_and_bounds_by_the_pools_entry():
    assert problems(
        (["window_s", "panic_window_s"], "panic_window_s must be at most window_s"),
        (["pools.backend.min_replicas", "pools.backend.max_replicas"], "need min <= max"),
        (["state_dir"], "tenfold_state_dir='x' must be an absolute path"),
        ([], "not JSON"),
    ) == [
        "monitor_window and monitor_panic_window: panic_window_s must be at most window_s",
        "monitor_pools.backend.min_replicas and monitor_pools.backend.max_replicas: need min <= max",
        "tenfold_state_dir: tenfold_state_dir='x' must be an absolute path",
        "not JSON",
    ]
