# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold_scale_plan: with validate_only, the request is checked in the ansible-playbook
process itself (pure logic, no Docker), saving a module process (about half a second) on every scale run.
Every other call runs the module on the Docker host as usual.

The documentation is the module's (plugins/modules/tenfold_scale_plan.py); the check is
module_utils/tenfold_scale.py's parse_request, loaded from its file as plugins/action/tenfold_lock.py does.
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
        args = self._task.args
        if not args.get("validate_only"):
            return self._execute_module(module_name="tenfold_scale_plan", task_vars=task_vars)
        result = super().run(tmp, task_vars)
        code = _scale_code()
        try:
            names = [str(item["name"]) for item in args.get("pools") or []]
            chosen, _, _, _ = code.parse_request(
                names, args.get("pool"), args.get("direction"), args.get("step"), args.get("replicas")
            )
            code.parse_expected(args.get("expect_current"), chosen, args.get("replicas"))
        except (code.ScaleRequestError, KeyError, TypeError) as exc:
            result.update(failed=True, msg=f"scale request rejected, nothing changed: {exc}")
            return result
        result.update(changed=False, pools=[], targets={}, members={})
        return result
