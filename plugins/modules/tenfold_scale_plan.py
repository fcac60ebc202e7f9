#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tenfold_scale_plan
short_description: Turn a scale request into the replica count each pool should end with
description:
  - Reads how many replicas of each pool run on the Docker host and applies the request, either relative
    (O(direction) and O(step), for every pool or for O(pool)) or absolute (O(replicas) for O(pool)).
  - A replica that exited or was removed does not count, so a request for the pool's usual size brings it
    back (M(tenfold_pool) starts or recreates it, health-gated).
  - A target beyond a pool's bounds is clamped to the bound, and the clamp is said in RV(pools).
  - A malformed request fails with a message that says what to fix, before anything changes. The module
    itself never changes anything.
version_added: "0.1.0"
author: tenfold contributors
options:
  stack:
    description: Name of the stack.
    type: str
    required: true
  pools:
    description:
      - The stack's pools, each a dict with at least C(name), C(min_replicas) and C(max_replicas) (whole
        numbers), and C(port_base) for its RV(members); other keys are ignored, so the app_pools role passes
        its pool list as it is.
    type: list
    elements: dict
    required: true
  pool:
    description: Limit the request to this pool. Required with O(replicas).
    type: str
  direction:
    description: C(up) or C(down), by O(step) replicas. Taken as given, so a wrong value gets a clear message.
    type: str
  step:
    description: Replicas to add or remove with O(direction); a whole number of 1 or more (default 1).
    type: raw
  replicas:
    description:
      - Absolute number of replicas for O(pool); a whole number.
      - Or, without O(pool), a dict of pool names to absolute numbers, so several pools move in one run.
    type: raw
  expect_current:
    description:
      - The pool's size the request was planned on, with O(pool) and O(replicas). If the pool has another
        size now (a scale run that held the lock meanwhile changed it), nothing is planned and RV(pools)
        says the request is stale; the requester plans again from what that run left.
      - The monitor passes it with every decision, so an operator's run it waited behind stands.
    type: raw
  bind_address:
    description:
      - Address the replicas publish their ports on; with O(advertise_address), what RV(members) names.
    type: str
    default: 127.0.0.1
  advertise_address:
    description: Address the load balancer reaches the replicas at; by default what reaches O(bind_address).
    type: str
    default: ""
  docker_host:
    description: Docker engine to talk to; the environment's by default.
    type: str
  validate_only:
    description:
      - Only check the request against the pools' names and bounds, without reading the Docker
        host; RV(pools), RV(targets) and RV(members) are then empty. M(tenfold_lock) is taken after this, so
        a malformed request fails at once, not after waiting for another run's lock.
    type: bool
    default: false
requirements:
  - docker (the Docker SDK for Python) on the target host
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Plan "-e direction=up"
  tenfold_scale_plan:
    stack: tenfold
    pools:
      - {name: frontend, min_replicas: 3, max_replicas: 10}
      - {name: backend, min_replicas: 3, max_replicas: 10}
    direction: up
  register: plan
"""

RETURN = r"""
pools:
  description:
    - One entry per pool of the stack, in the order given.
    - C(reconcile) is true for the pools the request names, unless it is stale; C(scale.yml) reconciles
      those at its end, which starts their missing warm replicas even when their size does not change.
  returned: always
  type: list
  elements: dict
  sample:
    - {"pool": "backend", "current": 3, "target": 4, "direction": "up", "clamped": false,
       "message": "backend: 3 -> 4 replicas", "reconcile": true}
    - {"pool": "frontend", "current": 3, "target": 3, "direction": "none", "clamped": false,
       "message": "frontend: not part of this request", "reconcile": false}
targets:
  description: The replica count each pool should end with, by pool name.
  returned: always
  type: dict
  sample: {"frontend": 3, "backend": 4}
members:
  description:
    - By pool name (of the pools given a C(port_base)), how the load balancer reaches each replica the pool
      has now, as M(tenfold_pool) returns them. A pool this run does not change keeps exactly these.
  returned: always
  type: dict
  sample: {"frontend": [{"name": "tenfold-frontend-1", "replica": 1, "address": "127.0.0.1", "port": 18101}]}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tenfold_docker import client, running_replicas
from ansible.module_utils.tenfold_pool import PoolError, member_at, probe_address
from ansible.module_utils.tenfold_scale import (
    Bounds,
    PoolTarget,
    ScaleRequestError,
    parse_expected,
    parse_request,
    stale_target,
    target_for,
)


def argument_spec() -> dict:
    return {
        "stack": {"type": "str", "required": True},
        "pools": {"type": "list", "elements": "dict", "required": True},
        "pool": {"type": "str"},
        "direction": {"type": "str"},
        "step": {"type": "raw"},
        "replicas": {"type": "raw"},
        "expect_current": {"type": "raw"},
        "bind_address": {"type": "str", "default": "127.0.0.1"},
        "advertise_address": {"type": "str", "default": ""},
        "docker_host": {"type": "str"},
        "validate_only": {"type": "bool", "default": False},
    }


def pool_bounds(item: dict) -> tuple[str, Bounds]:
    try:
        name = str(item["name"])
        return name, Bounds(int(item["min_replicas"]), int(item["max_replicas"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScaleRequestError(f"pool entry {item!r} needs name, min_replicas and max_replicas") from exc


def current_members(stack: str, items: list[dict], running: dict[str, list[int]], address: str) -> dict:
    """Members of each pool with a port_base: its running replicas, by their own indexes."""
    members = {}
    for item in items:
        if item.get("port_base") in (None, ""):
            continue
        try:
            port_base = int(item["port_base"])
        except (TypeError, ValueError) as exc:
            raise ScaleRequestError(
                f"pool {item['name']}: port_base {item['port_base']!r} is not a number"
            ) from exc
        name = str(item["name"])
        members[name] = [member_at(stack, name, port_base, i, address) for i in running[name]]
    return members


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        pools = [pool_bounds(item) for item in params["pools"]]
        names = [name for name, _ in pools]
        chosen, direction, step, replicas = parse_request(
            names, params["pool"], params["direction"], params["step"], params["replicas"]
        )
        expected = parse_expected(params["expect_current"], chosen, replicas)
        if params["validate_only"]:
            module.exit_json(changed=False, pools=[], targets={}, members={})
        cli = client(params["docker_host"])
        plan = []
        running = {name: running_replicas(cli, params["stack"], name) for name, _ in pools}
        for name, bounds in pools:
            current = len(running[name])
            if name in chosen and expected is not None and expected != current:
                plan.append(stale_target(name, current, expected))
            elif name in chosen:
                wanted = replicas[name] if isinstance(replicas, dict) else replicas
                plan.append(target_for(name, current, bounds, direction, step, wanted))
            else:
                plan.append(
                    PoolTarget(name, current, current, False, f"{name}: not part of this request", False)
                )
        address = params["advertise_address"] or probe_address(params["bind_address"])
        members = current_members(params["stack"], params["pools"], running, address)
    except (ScaleRequestError, PoolError) as exc:
        module.fail_json(msg=f"scale request rejected, nothing changed: {exc}")
    for target in plan:
        if target.clamped:
            module.warn(target.message)
    module.exit_json(
        changed=False,
        pools=[t.as_dict() for t in plan],
        targets={t.pool: t.target for t in plan},
        members=members,
    )


if __name__ == "__main__":
    main()
