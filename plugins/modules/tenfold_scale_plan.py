#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tenfold_scale_plan
short_description: Turn a scale request into the replica count each pool should end with
description:
  - Reads how many replicas each pool has on the Docker host and applies the request, either relative
    (O(direction) and O(step), for every pool or for O(pool)) or absolute (O(replicas) for O(pool)).
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
        numbers); other keys are ignored, so the app_pools role passes its pool list as it is.
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
  docker_host:
    description: Docker engine to talk to; the environment's by default.
    type: str
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
  description: One entry per pool of the stack, in the order given.
  returned: always
  type: list
  elements: dict
  sample:
    - {"pool": "backend", "current": 3, "target": 4, "direction": "up", "clamped": false,
       "message": "backend: 3 -> 4 replicas"}
    - {"pool": "frontend", "current": 3, "target": 3, "direction": "none", "clamped": false,
       "message": "frontend: not part of this request"}
targets:
  description: The replica count each pool should end with, by pool name.
  returned: always
  type: dict
  sample: {"frontend": 3, "backend": 4}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tenfold_docker import client, replica_count
from ansible.module_utils.tenfold_pool import PoolError
from ansible.module_utils.tenfold_scale import (
    Bounds,
    PoolTarget,
    ScaleRequestError,
    parse_request,
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
        "docker_host": {"type": "str"},
    }


def pool_bounds(item: dict) -> tuple[str, Bounds]:
    try:
        name = str(item["name"])
        return name, Bounds(int(item["min_replicas"]), int(item["max_replicas"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScaleRequestError(f"pool entry {item!r} needs name, min_replicas and max_replicas") from exc


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        pools = [pool_bounds(item) for item in params["pools"]]
        names = [name for name, _ in pools]
        chosen, direction, step, replicas = parse_request(
            names, params["pool"], params["direction"], params["step"], params["replicas"]
        )
        cli = client(params["docker_host"])
        plan = []
        for name, bounds in pools:
            current = replica_count(cli, params["stack"], name)
            if name in chosen:
                wanted = replicas[name] if isinstance(replicas, dict) else replicas
                plan.append(target_for(name, current, bounds, direction, step, wanted))
            else:
                plan.append(PoolTarget(name, current, current, False, f"{name}: not part of this request"))
    except (ScaleRequestError, PoolError) as exc:
        module.fail_json(msg=f"scale request rejected, nothing changed: {exc}")
    for target in plan:
        if target.clamped:
            module.warn(target.message)
    module.exit_json(
        changed=False,
        pools=[t.as_dict() for t in plan],
        targets={t.pool: t.target for t in plan},
    )


if __name__ == "__main__":
    main()
