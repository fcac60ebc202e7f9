# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The monitor role's filters: each pool's complete scaling policy, as the numbers the monitor expects, and
the monitor's verdict on the rendered settings in the role's own variable names.

Only merging, type conversion and naming happen here (values from `-e key=value` arrive as strings). Whether
the settings are valid is decided once, by the monitor package (`tenfold-monitor check`, which asks
`policy.PolicyConfig` (module_utils) about each pool): tasks/validate.yml runs it before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# PolicyConfig fields that are whole numbers; every other field is a float or None (off).
_WHOLE = frozenset({"min_replicas", "max_replicas"})
_NONE_STRINGS = frozenset({"", "none", "null"})


def _number(value: Any, whole: bool) -> Any:
    """value as an int (whole) or a float; None stays None; anything unreadable is returned unchanged."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NONE_STRINGS:
            return None
        try:
            return int(text) if whole else float(text)
        except ValueError:
            return value
    if isinstance(value, float) and whole:
        return int(value) if value.is_integer() else value
    if isinstance(value, int | float):
        return value if whole else float(value)
    return value


def monitor_pools(
    pools: Mapping[str, Mapping[str, Any] | None], policy: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """{pool: policy | pool's own settings}, every value converted to the type PolicyConfig expects."""
    merged: dict[str, dict[str, Any]] = {}
    for name, own in (pools or {}).items():
        values = {**policy, **(own or {})}
        merged[str(name)] = {key: _number(value, key in _WHOLE) for key, value in values.items()}
    return merged


def _variable(
    setting: str,
    pools: Mapping[str, Any],
    setting_vars: Mapping[str, str],
    policy_vars: Mapping[str, str],
) -> str:
    """The role variable a setting of the monitor's (dotted, as `check` names it) was rendered from."""
    top, _dot, rest = setting.partition(".")
    if top != "pools" or not rest:
        return setting_vars.get(top, f"the monitor's setting {setting}")
    pool, _dot, name = rest.partition(".")
    if not name:
        return f"monitor_pools.{pool}"
    # a pool's own entry wins over the variable every pool takes its value from
    if name in ((pools or {}).get(pool) or {}) or name not in policy_vars:
        return f"monitor_pools.{pool}.{name}"
    return policy_vars[name]


def monitor_problems(
    check: Mapping[str, Any],
    pools: Mapping[str, Any],
    setting_vars: Mapping[str, str],
    policy_vars: Mapping[str, str],
) -> list[str]:
    """`tenfold-monitor check`'s problems, each led by the role variables it is about (once each)."""
    lines: list[str] = []
    for problem in check.get("problems", []):
        names = dict.fromkeys(_variable(s, pools, setting_vars, policy_vars) for s in problem["settings"])
        line = f"{' and '.join(names)}: {problem['message']}" if names else problem["message"]
        if line not in lines:
            lines.append(line)
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "monitor_pools": monitor_pools,
            "monitor_problems": monitor_problems,
        }
