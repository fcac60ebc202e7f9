# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Filters that turn facts gathered on the Docker hosts, and the role's settings, into what the LB needs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_UNIT_SECONDS = {
    "ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000,
}  # fmt: skip


def members(
    hosts: Sequence[str], hostvars: Mapping[str, Any], fact: str = "app_pools_members"
) -> dict[str, list[dict[str, Any]]]:
    """Per pool, the LB members {id, address, port} of the hosts' `fact`, in host and replica order."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for host in hosts or []:
        pools = (hostvars.get(host) or {}).get(fact) or {}
        for pool, replicas in pools.items():
            ordered = sorted(replicas, key=lambda r: int(r.get("replica", 0)))
            merged.setdefault(pool, []).extend(
                {"id": r["name"], "address": r["address"], "port": int(r["port"])} for r in ordered
            )
    return merged


def pool_sizes(
    hosts: Sequence[str], hostvars: Mapping[str, Any], fact: str = "app_pools_found"
) -> dict[str, int]:
    """Per pool, its size across the hosts: the distinct indexes of the serving replicas that run on them
    (tenfold.stack.pool_info's `serving` in each host's `fact`). A replica found on two hosts counts once."""
    indexes: dict[str, set[int]] = {}
    for host in hosts or []:
        serving = ((hostvars.get(host) or {}).get(fact) or {}).get("serving") or {}
        for pool, found in serving.items():
            indexes.setdefault(pool, set()).update(int(i) for i in found)
    return {pool: len(found) for pool, found in indexes.items()}


def docker_hosts(hosts: Sequence[str], hostvars: Mapping[str, Any], me: str) -> list[dict[str, str]]:
    """How the monitor on host `me` reaches each Docker host's engine: {name, url}, url "" for its own (or
    a local connection's), the host's tenfold_docker_url when set, else ssh://[user@]address[:port] as
    Ansible reaches it."""
    found = []
    for host in hosts or []:
        hv = hostvars.get(host) or {}
        if host == me or hv.get("ansible_connection") == "local":
            url = ""
        elif hv.get("tenfold_docker_url"):
            url = str(hv["tenfold_docker_url"])
        else:
            user = f"{hv['ansible_user']}@" if hv.get("ansible_user") else ""
            port = f":{int(hv['ansible_port'])}" if hv.get("ansible_port") else ""
            url = f"ssh://{user}{hv.get('ansible_host') or host}{port}"
        found.append({"name": host, "url": url})
    return found


def seconds(value: str | int) -> float:
    """An nginx time such as 10s, 500ms or 1m30s, in seconds (a bare number is seconds, as nginx reads it)."""
    text = str(value).strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + (u or "") for n, u in parts) != text:
        raise AnsibleFilterError(f"{value!r} is not an nginx time such as 10s, 500ms or 1m30s")
    return sum(int(n) * _UNIT_SECONDS[u or None] for n, u in parts)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "docker_hosts": docker_hosts,
            "members": members,
            "pool_sizes": pool_sizes,
            "seconds": seconds,
        }
