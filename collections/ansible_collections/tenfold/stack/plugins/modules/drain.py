#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drain
short_description: Wait until replicas draining in the load balancer have finished their requests
description:
  - Polls the health endpoint of each replica, which reports the requests it has in flight, and with
    O(lb_url) the LB's own count of the requests it has in flight on the replica, until both report none
    for O(settle) polls in a row, or until O(timeout) seconds have passed.
  - Call it after the replicas were marked C(draining) in the LB (M(tenfold.stack.lb_members)), so they get no
    new request, and before they leave the pool and are stopped. A replica that does not answer serves nothing
    and counts as drained; so does one the LB no longer lists.
  - It changes nothing. Replicas still busy at the timeout are reported (RV(busy)) with a warning; stopping
    them afterwards still gives their server its graceful stop timeout.
version_added: "0.1.0"
author: tenfold contributors (!UNKNOWN)
options:
  members:
    description:
      - The replicas to drain, as returned by M(tenfold.stack.pool) (C(name), C(address), C(port)) or as LB
        members (C(id) instead of C(name)).
    type: list
    elements: dict
    required: true
  health_path:
    description: HTTP path that answers with a JSON object holding C(inflight), the requests in progress.
    type: str
    default: /health
  lb_url:
    description: Base URL of the LB's status server (its members API); without it only the replicas are asked.
    type: str
  pool:
    description: The pool the replicas are members of in the LB. Required with O(lb_url).
    type: str
  timeout:
    description: Seconds to wait at most.
    type: int
    default: 30
  settle:
    description: Consecutive polls that must report no request in flight.
    type: int
    default: 2
  interval:
    description: Seconds between polls.
    type: float
    default: 0.1
extends_documentation_fragment:
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
    details: In check mode it does not wait.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Drain the replicas leaving the pool
  tenfold.stack.drain:
    members: "{{ leaving }}"
    timeout: 30
"""

RETURN = r"""
replicas:
  description: >-
    Per replica, whether it drained, how long that took and its last in-flight count (the replica's and the
    LB's added up).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "tenfold-backend-7", "drained": true, "waited_s": 1.02, "last_inflight": 0}]
busy:
  description: Names of the replicas still busy at the timeout.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.lb import DRAIN_SPEC, LbError, drain_members


def argument_spec() -> dict:
    return dict(DRAIN_SPEC)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(), required_by={"lb_url": "pool"}, supports_check_mode=True
    )
    try:
        result = drain_members(module.params, module.check_mode)
    except LbError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
