# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Filters that turn facts gathered on the Docker hosts into what the load balancer needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def tenfold_upstreams(hosts: Sequence[str], hostvars: Mapping[str, Any]) -> dict[str, list[str]]:
    upstreams: dict[str, list[str]] = {}
    for host in hosts or []:
        members = (hostvars.get(host) or {}).get("app_pools_members") or {}
        for pool, replicas in members.items():
            ordered = sorted(replicas, key=lambda r: int(r.get("replica", 0)))
            upstreams.setdefault(pool, []).extend(f"{r['address']}:{r['port']}" for r in ordered)
    return upstreams


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tenfold_upstreams": tenfold_upstreams}
