# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The monitor role's filter: each pool's complete scaling policy, as the numbers the monitor expects.

Only merging and type conversion happen here (values from `-e key=value` arrive as strings). Whether the
numbers make a valid policy is decided once, by `tenfold_policy.PolicyConfig`: the role loads the rendered
settings with the monitor before it writes them.
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


def tenfold_monitor_pools(
    pools: Mapping[str, Mapping[str, Any] | None], policy: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """{pool: policy | pool's own settings}, every value converted to the type PolicyConfig expects."""
    merged: dict[str, dict[str, Any]] = {}
    for name, own in (pools or {}).items():
        values = {**policy, **(own or {})}
        merged[str(name)] = {key: _number(value, key in _WHOLE) for key, value in values.items()}
    return merged


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tenfold_monitor_pools": tenfold_monitor_pools}
