# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold.stack.lb_members: on a local LB host the members are set from the
ansible-playbook process (plugin_utils/local_first.py), on the critical path of every scale-up.

The documentation is the module's (plugins/modules/lb_members.py); the code is module_utils/lb.py's.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.tenfold.stack.plugins.module_utils import lb
from ansible_collections.tenfold.stack.plugins.plugin_utils.local_first import LocalFirst


class ActionModule(LocalFirst):
    MODULE = "tenfold.stack.lb_members"
    SPEC = lb.MEMBERS_SPEC

    def local(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return lb.set_members(params, bool(self._task.check_mode), bool(self._task.diff))
        except lb.LbError as exc:
            return {"failed": True, "msg": str(exc), "changed_pools": []}
