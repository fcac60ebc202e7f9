#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: scale_plan
short_description: Turn a scale request into the replica count each pool should end with
description:
  - Applies a scale request to each pool's current size (O(current), counted on the Docker hosts by
    M(tenfold.stack.pool_info)), either relative (O(direction) and O(step), for every pool or for O(pool)) or
    absolute (O(replicas) for O(pool)).
  - A replica that exited or was removed does not count, so a request for the pool's usual size brings it
    back (M(tenfold.stack.pool) starts or recreates it, health-gated).
  - A target beyond a pool's bounds is clamped to the bound, and the clamp is said in RV(pools).
  - A malformed request fails with a message that says what to fix, before anything changes. The module
    itself never changes anything, and reads nothing but its arguments (its action plugin runs it in the
    C(ansible-playbook) process).
version_added: "0.1.0"
author: tenfold contributors (!UNKNOWN)
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
  expect_current:
    description:
      - The pool's size the request was planned on, with O(pool) and O(replicas). If the pool has another
        size now (a scale run that held the lock meanwhile changed it), nothing is planned and RV(pools)
        says the request is stale; the requester plans again from what that run left.
      - The monitor passes it with every decision, so an operator's run it waited behind stands.
    type: raw
  current:
    description:
      - Each pool's size now, by pool name, across all its Docker hosts (the running replicas that are not
        warm). A pool not named has none.
    type: dict
    default: {}
  validate_only:
    description:
      - Only check the request against the pools' names and bounds, without O(current); RV(pools) and
        RV(targets) are then empty. M(tenfold.stack.lock) is taken after this, so
        a malformed request fails at once, not after waiting for another run's lock.
    type: bool
    default: false
extends_documentation_fragment:
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Plan "-e direction=up"
  tenfold.stack.scale_plan:
    stack: tenfold
    pools:
      - {name: frontend, min_replicas: 3, max_replicas: 10}
      - {name: backend, min_replicas: 3, max_replicas: 10}
    direction: up
    current: {frontend: 3, backend: 3}
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
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.scale import ScaleRequestError, scale_plan


def argument_spec() -> dict:
    return {
        "stack": {"type": "str", "required": True},
        "pools": {"type": "list", "elements": "dict", "required": True},
        "pool": {"type": "str"},
        "direction": {"type": "str"},
        "step": {"type": "raw"},
        "replicas": {"type": "raw"},
        "expect_current": {"type": "raw"},
        "current": {"type": "dict", "default": {}},
        "validate_only": {"type": "bool", "default": False},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = scale_plan(module.params)
    except ScaleRequestError as exc:
        module.fail_json(msg=f"scale request rejected, nothing changed: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
