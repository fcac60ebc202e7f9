#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pool_info
short_description: Read which replicas of a stack's pools run on a Docker host
description:
  - Lists, per pool, the indexes of the serving replicas that run on this Docker host (RV(serving), without
    warm replicas or exited ones) and how the load balancer reaches each (RV(members)).
  - Of a pool spread over several Docker hosts, the pool's size is the number of distinct indexes over all
    of them; the C(tenfold.stack.pool_sizes) filter counts it from each host's result, for
    M(tenfold.stack.scale_plan) and M(tenfold.stack.pool).
  - Reads the engine only; never changes anything.
version_added: "0.2.0"
author: tenfold contributors (!UNKNOWN)
options:
  stack:
    description: Name of the stack.
    type: str
    required: true
  pools:
    description:
      - The stack's pools, each a dict with at least C(name) and C(port_base); other keys are ignored, so
        the app_pools role passes its pool list as it is.
    type: list
    elements: dict
    required: true
  hosts:
    description:
      - How many Docker hosts the pools are spread over, as for M(tenfold.stack.pool). RV(members) lists only
        the replicas placed on this host (O(host_index)); one found here that belongs to another host (this
        host ran it while that one was left out) is counted in RV(serving) but is no member, so that two
        hosts never offer the load balancer the same replica.
    type: int
    default: 1
  host_index:
    description: This host's place among the O(hosts), from C(0) (inventory order).
    type: int
    default: 0
  bind_address:
    description: Address the replicas publish their ports on; with O(advertise_address), what members name.
    type: str
    default: 127.0.0.1
  advertise_address:
    description: Address the load balancer reaches the replicas at; by default what reaches O(bind_address).
    type: str
    default: ""
extends_documentation_fragment:
  - tenfold.stack.docker
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read the pools on each Docker host
  tenfold.stack.pool_info:
    stack: tenfold
    pools:
      - {name: frontend, port_base: 18100}
      - {name: backend, port_base: 18200}
  register: found
"""

RETURN = r"""
serving:
  description: By pool name, the indexes of the serving replicas running here, in order.
  returned: always
  type: dict
  sample: {"frontend": [2], "backend": [1, 3]}
members:
  description:
    - By pool name, how the load balancer reaches each of those replicas that is placed on this host (as
      M(tenfold.stack.pool) says).

  returned: always
  type: dict
  sample:
    backend:
      - {"name": "tenfold-backend-1", "replica": 1, "address": "10.0.1.11", "port": 18201}
      - {"name": "tenfold-backend-3", "replica": 3, "address": "10.0.1.11", "port": 18203}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.engine import client, running_replicas
from ansible_collections.tenfold.stack.plugins.module_utils.pool import (
    PoolError,
    check_name,
    check_placement,
    member_at,
    placed_here,
    probe_address,
)


def argument_spec() -> dict:
    return {
        "stack": {"type": "str", "required": True},
        "pools": {"type": "list", "elements": "dict", "required": True},
        "hosts": {"type": "int", "default": 1},
        "host_index": {"type": "int", "default": 0},
        "bind_address": {"type": "str", "default": "127.0.0.1"},
        "advertise_address": {"type": "str", "default": ""},
        "docker_host": {"type": "str"},
    }


def read(params: dict) -> dict:
    stack = check_name("stack", params["stack"])
    check_placement(params["hosts"], params["host_index"])
    address = params["advertise_address"] or probe_address(params["bind_address"])
    cli = client(params["docker_host"])
    serving, members = {}, {}
    for item in params["pools"]:
        try:
            name, port_base = check_name("pool", str(item["name"])), int(item["port_base"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PoolError(f"pool entry {item!r} needs name and a numeric port_base") from exc
        serving[name] = running_replicas(cli, stack, name)
        members[name] = [
            member_at(stack, name, port_base, i, address)
            for i in serving[name]
            if placed_here(i, params["hosts"], params["host_index"])
        ]
    return {"serving": serving, "members": members}


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        found = read(module.params)
    except PoolError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
