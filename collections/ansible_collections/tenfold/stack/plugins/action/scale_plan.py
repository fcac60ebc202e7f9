# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold.stack.scale_plan: the plan is pure logic (the pools' sizes come in as arguments),
so it runs in the ansible-playbook process itself, saving a module process (about half a second) on every
scale run.

The documentation is the module's (plugins/modules/scale_plan.py); the body is module_utils/scale.py's
scale_plan.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.tenfold.stack.plugins.module_utils import scale as code


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        result = super().run(tmp, task_vars)
        try:
            result.update(code.scale_plan(dict(self._task.args)))
        except (code.ScaleRequestError, KeyError, TypeError) as exc:
            result.update(failed=True, msg=f"scale request rejected, nothing changed: {exc}")
        return result
