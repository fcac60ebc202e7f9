#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: scale_event
short_description: Append one scale event to the stack's scale events file on the state host
description:
  - Appends one event, as the C(tenfold.stack.scale_events) callback built it, as one JSON line to O(path).
  - The callback runs it on the stack's state host when that host is not the control machine (with
    C(ansible) ad hoc, at the end of the scale run); on the control machine the callback appends in its own
    process. Not meant for playbooks.
version_added: "0.1.0"
author: tenfold contributors (!UNKNOWN)
options:
  path:
    description: The scale events file (C(<tenfold_state_dir>/scale-events.jsonl)).
    type: path
    required: true
  event:
    description: The event (start, end, trigger, stack, request, pools, result, ...).
    type: dict
    required: true
extends_documentation_fragment:
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
    details: In check mode nothing is written.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Record a scale event on the state host
  tenfold.stack.scale_event:
    path: /var/lib/tenfold/tenfold/scale/scale-events.jsonl
    event: {start: "2026-12-06T05:22:08.123Z", result: ok}
  delegate_to: "{{ lookup('tenfold.stack.state', 'host') }}"
"""

RETURN = r"""
path:
  description: The file the event was appended to.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.events import append


def argument_spec() -> dict:
    return {
        "path": {"type": "path", "required": True},
        "event": {"type": "dict", "required": True},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    path = module.params["path"]
    if not module.check_mode:
        try:
            append(path, module.params["event"])
        except OSError as exc:
            module.fail_json(msg=f"scale event not written to {path}: {exc}", path=path)
    module.exit_json(changed=not module.check_mode, path=path)


if __name__ == "__main__":
    main()
