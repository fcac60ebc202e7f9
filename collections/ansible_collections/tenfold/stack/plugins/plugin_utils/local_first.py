# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Base of the action plugins that run their module's code in the ansible-playbook process when the task's
host is this machine (connection local), and the module itself elsewhere.

A module process costs about half a second (a Python start, its AnsiballZ payload, Ansible's module
imports); code that needs only the standard library and reaches 127.0.0.1 of the host does the same here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.plugins.action import ActionBase


class LocalFirst(ActionBase):
    """Subclasses set MODULE (the module's FQCN), SPEC (its argument spec), ERRORS (the exceptions that
    fail the task with their message) and local()."""

    TRANSFERS_FILES = False
    MODULE = ""
    SPEC: Mapping[str, Any] = {}
    ERRORS: tuple[type[Exception], ...] = ()

    def local(self, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, tmp: str | None = None, task_vars: dict | None = None) -> dict:
        result = super().run(tmp, task_vars)
        if self._connection.transport != "local":
            module_args = dict(self._task.args)
            result.update(self._execute_module(self.MODULE, module_args=module_args, task_vars=task_vars))
            return result
        _validation, params = self.validate_argument_spec(argument_spec=dict(self.SPEC))
        try:
            result.update(self.local(params))
        except self.ERRORS as exc:
            result.update(failed=True, msg=str(exc))
        return result
