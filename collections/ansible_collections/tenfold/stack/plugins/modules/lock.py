#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lock
short_description: Hold a run lock so that only one scale run changes a stack at a time
description:
  - Takes, renews or releases a lock file owned by the C(ansible-playbook) run that calls it. Run it on the
    stack's state host (C(delegate_to) the C(tenfold.stack.state) lookup's host), where the lock file is.
  - A second run waits up to O(timeout) seconds for the lock and then fails, naming the run that holds it.
  - A lock whose owner has died (killed run) is recovered and reported in RV(recovered_from). Of several runs
    recovering the same lock exactly one wins (under a C(flock) on C(<path>.guard)).
  - The lock file appears only with its owner written in it (written to a file of its own, then linked).
  - A lock held from another host (whose process cannot be seen, with the lock on a shared file system)
    counts as held while its holder renews its lease, then as stale 120 s after the last renewal. The
    C(tenfold.stack.scale_events) callback renews it every 20 s (the lock file's mtime) from the
    C(ansible-playbook) process, for as long as the run holds the lock.
  - Where the state host is the control machine (connection C(local)) it runs inside the ansible-playbook
    process (its action plugin, C(plugins/action/lock.py)), which saves starting a module process on
    a scale run's path. Elsewhere the action plugin runs this module on the state host, with O(owner) set to
    the control machine's ansible-playbook run; its lease is renewed by the C(tenfold.stack.scale_events)
    callback with O(state=renewed).
version_added: "0.1.0"
author: tenfold contributors (!UNKNOWN)
options:
  path:
    description: The lock file.
    type: path
    required: true
  state:
    description: >-
      C(acquired) takes the lock, waiting if needed; C(released) gives back a lock this run holds;
      C(renewed) renews the lease of a lock this run holds (its mtime).
    type: str
    default: acquired
    choices: [acquired, released, renewed]
  timeout:
    description: Seconds to wait for a lock held by a live run before failing.
    type: int
    default: 120
  run:
    description: A description of this run, shown to a run that has to wait.
    type: str
    default: ""
  owner:
    description:
      - The run that owns the lock (pid, start_ticks, host, since, run, lease_s), as RV(owner) returns it.
      - Set by the action plugin when the module runs on another host than the control machine's
        ansible-playbook process; omitted, the module finds the ansible-playbook process above itself.
    type: dict
extends_documentation_fragment:
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
    details: In check mode the lock is neither taken nor released.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Take the scale lock on the state host
  tenfold.stack.lock:
    path: "{{ lookup('tenfold.stack.state', 'lock') }}"
    timeout: 120
    run: "scale backend to 7"
  delegate_to: "{{ lookup('tenfold.stack.state', 'host') }}"
  run_once: true

- name: Give it back
  tenfold.stack.lock:
    path: "{{ lookup('tenfold.stack.state', 'lock') }}"
    state: released
  delegate_to: "{{ lookup('tenfold.stack.state', 'host') }}"
  run_once: true
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock now.
  returned: state=acquired
  type: bool
recovered_from:
  description: The dead run whose lock was taken over, if any (pid, host, since, run).
  returned: state=acquired
  type: dict
waited_s:
  description: Seconds spent waiting for another run.
  returned: state=acquired
  type: float
lock:
  description: The lock file (for the callback that renews the lease).
  returned: state=acquired, not in check mode
  type: str
owner:
  description: This run as the lock names it (pid, start_ticks, host, since, run, lease_s).
  returned: state=acquired, not in check mode
  type: dict
released:
  description: Whether a lock held by this run was removed.
  returned: state=released
  type: bool
renewed:
  description: Whether the lease of a lock held by this run was renewed (false once the lock is not its own).
  returned: state=renewed
  type: bool
local:
  description: Whether the lock was handled in the control machine's ansible-playbook process (a local host).
  returned: always, through the action plugin
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.lock import LockError, playbook_pid, run


def argument_spec() -> dict:
    return {
        "path": {"type": "path", "required": True},
        "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released", "renewed"]},
        "timeout": {"type": "int", "default": 120},
        "run": {"type": "str", "default": ""},
        "owner": {"type": "dict"},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        pid = None if module.params["owner"] else playbook_pid()
        result, warning = run(module.params, module.check_mode, pid)
    except LockError as exc:
        module.fail_json(msg=str(exc))
    if warning:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
