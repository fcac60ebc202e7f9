# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold.stack.lock. The lock is on the stack's state host (the task is delegated there).

Where that host is this machine (connection local), the lock is taken in the ansible-playbook process itself
instead of in a module process (which takes about half a second to start on every call). Elsewhere the module
runs on the state host, told which run owns the lock: this machine's ansible-playbook process, which the
module cannot see from there.

The documentation is the module's (plugins/modules/lock.py); the code is module_utils/lock.py.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from ansible.plugins.action import ActionBase
from ansible_collections.tenfold.stack.plugins.module_utils import lock as code

_SPEC = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released", "renewed"]},
    "timeout": {"type": "int", "default": 120},
    "run": {"type": "str", "default": ""},
    "owner": {"type": "dict"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        result = super().run(tmp, task_vars)
        _validation, params = self.validate_argument_spec(argument_spec=_SPEC)
        local = self._connection.transport == "local"
        result["local"] = local
        result["host"] = self._task.delegate_to or (task_vars or {}).get("inventory_hostname")
        try:
            # The run that owns the lock (wherever the lock file is): given, or this ansible-playbook process.
            pid = None if params["owner"] else code.playbook_pid(os.getpid())
            if local:
                outcome, warning = code.run(params, self._task.check_mode, pid)
            else:
                owner = params["owner"] or asdict(code.owner_for(pid, run=params["run"]))
                remote = self._execute_module(
                    module_name="tenfold.stack.lock",
                    module_args={**params, "owner": owner},
                    task_vars=task_vars,
                )
                result.update(remote)
                return result
        except code.LockError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result.update(outcome)
        if warning:
            result.setdefault("warnings", []).append(warning)
        return result
