# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold_lock. The lock is on the stack's state host (the task is delegated there).

Where that host is this machine (connection local), the lock is taken in the ansible-playbook process itself
instead of in a module process (which takes about half a second to start on every call). Elsewhere the module
runs on the state host, told which run owns the lock: this machine's ansible-playbook process, which the
module cannot see from there.

The documentation is the module's (plugins/modules/tenfold_lock.py); the code is module_utils/tenfold_lock.py,
loaded from its file: the controller does not see the project's module_utils as ansible.module_utils.*.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase

_UTIL = Path(__file__).resolve().parents[1] / "module_utils" / "tenfold_lock.py"
_SPEC = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released", "renewed"]},
    "timeout": {"type": "int", "default": 120},
    "run": {"type": "str", "default": ""},
    "owner": {"type": "dict"},
}


def _lock_code() -> Any:
    name = "tenfold_lock_controller"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _UTIL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        result = super().run(tmp, task_vars)
        _, params = self.validate_argument_spec(argument_spec=_SPEC)
        code = _lock_code()
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
                    module_name="tenfold_lock", module_args={**params, "owner": owner}, task_vars=task_vars
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
