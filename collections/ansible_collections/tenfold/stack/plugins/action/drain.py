# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Action plugin of tenfold.stack.drain: on a local LB host the wait runs in the ansible-playbook process
(plugin_utils/local_first.py).

The documentation is the module's (plugins/modules/drain.py); the code is module_utils/lb.py's.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.tenfold.stack.plugins.module_utils import lb
from ansible_collections.tenfold.stack.plugins.plugin_utils.local_first import LocalFirst


class ActionModule(LocalFirst):
    MODULE = "tenfold.stack.drain"
    SPEC = lb.DRAIN_SPEC
    ERRORS = (lb.LbError,)

    def local(self, params: dict[str, Any]) -> dict[str, Any]:
        return lb.drain_members(params, bool(self._task.check_mode))
