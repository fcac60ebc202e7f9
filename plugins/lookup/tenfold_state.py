# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Lookup tenfold_state: where the stack's scale lock and scale events live (the state host and directory)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: tenfold_state
short_description: The stack's state host and directory, where the scale lock and the scale events live
description:
  - Resolves C(tenfold_state_host) (default the first host of group C(tenfold_lb)) and C(tenfold_state_dir)
    (default C(/var/lib/tenfold/<tenfold_stack>/scale)) from the inventory, checks them and returns the state
    as a dict (host, dir, lock, events, local), or one of its fields when a term names it.
  - A host that is not in the inventory, or a directory that is not an absolute path, fails with a message
    that names the variable, before anything changes.
options:
  _terms:
    description: Field to return (host, dir, lock, events or local); none returns the whole dict.
    required: false
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Take the scale lock on the state host
  tenfold_lock:
    path: "{{ lookup('tenfold_state', 'lock') }}"
  delegate_to: "{{ lookup('tenfold_state', 'host') }}"
"""

RETURN = r"""
_raw:
  description: The state (host, dir, lock, events, local) or the field asked for.
  type: list
"""

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

_UTIL = Path(__file__).resolve().parents[1] / "module_utils" / "tenfold_state.py"
FIELDS = ("host", "dir", "lock", "events", "local")


def _state_code() -> Any:
    """module_utils/tenfold_state.py, loaded from its file (the controller does not see the project's
    module_utils as ansible.module_utils.*)."""
    name = "tenfold_state_controller"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _UTIL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class LookupModule(LookupBase):
    def run(self, terms: list, variables: dict | None = None, **kwargs: Any) -> list:
        variables = variables or {}
        code = _state_code()
        hostvars = variables.get("hostvars") or {}
        groups = variables.get("groups") or {}
        try:
            state = code.resolve(
                stack=str(variables.get("tenfold_stack") or "tenfold"),
                host=variables.get("tenfold_state_host"),
                directory=variables.get("tenfold_state_dir"),
                groups=groups,
                connections={h: hostvars[h].get("ansible_connection") for h in groups.get("all") or []},
            )
        except code.StateError as exc:
            raise AnsibleLookupError(str(exc)) from exc
        whole = state.as_dict()
        unknown = [term for term in terms if term not in FIELDS]
        if unknown:
            known = ", ".join(FIELDS)
            raise AnsibleLookupError(f"tenfold_state: unknown field {unknown[0]!r} (fields: {known})")
        return [whole[term] for term in terms] if terms else [whole]
