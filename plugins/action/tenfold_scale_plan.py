# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold_scale_plan: the plan is pure logic (the pools' sizes come in as arguments), so it
runs in the ansible-playbook process itself, saving a module process (about half a second) on every scale
run.

The documentation is the module's (plugins/modules/tenfold_scale_plan.py); the body is
module_utils/tenfold_scale.py's scale_plan, loaded from its file as plugins/action/tenfold_lock.py does.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase

_UTIL = Path(__file__).resolve().parents[1] / "module_utils" / "tenfold_scale.py"


def _scale_code() -> Any:
    name = "tenfold_scale_controller"
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
        code = _scale_code()
        try:
            result.update(code.scale_plan(dict(self._task.args)))
        except (code.ScaleRequestError, KeyError, TypeError) as exc:
            result.update(failed=True, msg=f"scale request rejected, nothing changed: {exc}")
        return result
