# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold_lock: the lock is the control machine's, so it is taken in the ansible-playbook
process itself instead of in a module process (which takes about half a second to start on every call).

The documentation is the module's (plugins/modules/tenfold_lock.py); the code is module_utils/tenfold_lock.py,
loaded from its file: the controller does not see the project's module_utils as ansible.module_utils.*.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase

_UTIL = Path(__file__).resolve().parents[1] / "module_utils" / "tenfold_lock.py"
_SPEC = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released"]},
    "timeout": {"type": "int", "default": 120},
    "run": {"type": "str", "default": ""},
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
    _requires_connection = False

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        result = super().run(tmp, task_vars)
        _, params = self.validate_argument_spec(argument_spec=_SPEC)
        code = _lock_code()
        try:
            outcome, warning = code.run(params, self._task.check_mode, code.playbook_pid(os.getpid()))
        except code.LockError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result.update(outcome)
        if warning:
            result.setdefault("warnings", []).append(warning)
        return result
