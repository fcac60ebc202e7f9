# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Lookup tenfold.stack.state: where the stack's scale lock and scale events live (the state host and
directory)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: state
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
  tenfold.stack.lock:
    path: "{{ lookup('tenfold.stack.state', 'lock') }}"
  delegate_to: "{{ lookup('tenfold.stack.state', 'host') }}"
"""

RETURN = r"""
_raw:
  description: The state (host, dir, lock, events, local) or the field asked for.
  type: list
"""

from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.tenfold.stack.plugins.module_utils import state as code

FIELDS = ("host", "dir", "lock", "events", "local")


class LookupModule(LookupBase):
    def run(self, terms: list, variables: dict | None = None, **kwargs: Any) -> list:
        variables = variables or {}
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
            raise AnsibleLookupError(f"tenfold.stack.state: unknown field {unknown[0]!r} (fields: {known})")
        return [whole[term] for term in terms] if terms else [whole]
