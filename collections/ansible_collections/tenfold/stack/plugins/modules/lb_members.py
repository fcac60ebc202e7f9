#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lb_members
short_description: Set the members of the load balancer's pools, live, without reloading nginx
description:
  - Makes each pool named in O(pools) have exactly the members given there (state C(active)) and in
    O(draining) (state C(draining)), through the LB's members API on its status server (127.0.0.1 only).
  - A C(draining) member gets no new request, and a client pinned to it moves to another member; the
    requests it has in flight finish. A member left out of both lists leaves the pool.
  - Every member is checked (id, address, port) before anything is written; host names are resolved to
    IPv4 addresses, since the balancer connects to addresses. A pool whose members already match is left
    alone. Each write names the generation it read, and the LB refuses it if another write came in between;
    the LB then keeps the members it has, and the module fails with the LB's reason.
  - nginx is never reloaded, so its worker processes, their keep-alive connections and balancing state stay.
    The LB persists the members to its state file, so a restarted nginx starts from them.
version_added: "0.2.0"
author: tenfold contributors (!UNKNOWN)
options:
  url:
    description: Base URL of the LB's status server on the LB host.
    type: str
    default: http://127.0.0.1:8081
  pools:
    description:
      - Pool name to the list of members it is to have, active. Each member has C(id) (or C(name), as
        M(tenfold.stack.pool) returns them), C(address) (IPv4 or a host name) and C(port).
      - Pools not named here are not touched.
    type: dict
    required: true
  draining:
    description: Pool name to the members that stay in the pool as C(draining). Each pool must be in O(pools).
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for each answer of the LB.
    type: float
    default: 5.0
extends_documentation_fragment:
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
    details: In check mode it reads the pools and reports what would change; it writes nothing.
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Point the backend pool at its replicas
  tenfold.stack.lb_members:
    url: http://127.0.0.1:8081
    pools:
      backend:
        - {id: tenfold-backend-1, address: 127.0.0.1, port: 18201}
        - {id: tenfold-backend-2, address: 127.0.0.1, port: 18202}

- name: Drain replica 2 (it stays in the pool, getting no new request)
  tenfold.stack.lb_members:
    pools:
      backend:
        - {id: tenfold-backend-1, address: 127.0.0.1, port: 18201}
    draining:
      backend:
        - {id: tenfold-backend-2, address: 127.0.0.1, port: 18202}
"""

RETURN = r"""
pools:
  description: Per pool named in O(pools), its generation and members after the run (before, in check mode).
  returned: always
  type: dict
  sample: {"backend": {"generation": 8, "members": [{"id": "tenfold-backend-1", "address": "127.0.0.1",
           "port": 18201, "state": "active"}]}}
changed_pools:
  description: The pools whose members changed (or would, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.lb import MEMBERS_SPEC, LbError, set_members


def argument_spec() -> dict:
    return dict(MEMBERS_SPEC)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = set_members(module.params, module.check_mode, module._diff)
    except LbError as exc:
        module.fail_json(msg=str(exc), changed_pools=[])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
