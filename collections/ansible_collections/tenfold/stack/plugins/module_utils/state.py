# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Where a stack's shared scale state lives: one host (the state host) and one directory on it.

The scale lock and the scale events (the history the monitor's cooldown reads) are there, so a run from a
laptop, an AWX job (whose container is gone when it ends) and the monitor on the LB host all see one lock and
one history, whichever playbook directory a run started from. The state host is `tenfold_state_host`,
default the first host of group tenfold_lb; the directory `tenfold_state_dir`, default
/var/lib/tenfold/<stack>/scale (beside the LB's own state, /var/lib/tenfold/<stack>/lb).

Pure and standard library only: the lookup plugin tenfold.stack.state, the monitor and the tests use it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import asdict, dataclass

STATE_ROOT = "/var/lib/tenfold"
LOCK_NAME = "scale.lock"
EVENTS_NAME = "scale-events.jsonl"
LB_GROUP = "tenfold_lb"


class StateError(ValueError):
    """tenfold_state_host or tenfold_state_dir is not usable; the message names the variable."""


def default_dir(stack: str) -> str:
    return f"{STATE_ROOT}/{stack}/scale"


def lock_path(directory: str) -> str:
    return posixpath.join(directory, LOCK_NAME)


def events_path(directory: str) -> str:
    return posixpath.join(directory, EVENTS_NAME)


@dataclass(frozen=True)
class State:
    host: str  # the inventory name of the state host
    dir: str
    local: bool  # the state host is reached with connection local: this machine, no module process needed

    @property
    def lock(self) -> str:
        return lock_path(self.dir)

    @property
    def events(self) -> str:
        return events_path(self.dir)

    def as_dict(self) -> dict:
        return {**asdict(self), "lock": self.lock, "events": self.events}


def check_dir(directory: object) -> str:
    """tenfold_state_dir, normalized: an absolute path, not the root, no '..', no control character."""
    if not isinstance(directory, str) or not directory:
        raise StateError(f"tenfold_state_dir={directory!r} must be an absolute path")
    if any(ord(char) < 32 or ord(char) == 127 for char in directory):
        raise StateError(f"tenfold_state_dir={directory!r} must not hold control characters")
    if not directory.startswith("/"):
        raise StateError(
            f"tenfold_state_dir={directory!r} must be an absolute path: it is the same directory on the state"
            " host for every run, whichever directory the run started from"
        )
    if ".." in directory.split("/"):
        raise StateError(f"tenfold_state_dir={directory!r} must not hold '..'")
    normal = posixpath.normpath(directory)
    if normal == "/":
        raise StateError("tenfold_state_dir='/' would put the stack's lock and events in the root directory")
    return normal


def resolve(
    stack: str,
    host: object,
    directory: object,
    groups: Mapping[str, list[str]],
    connections: Mapping[str, object],
) -> State:
    """The stack's state host and directory from the inventory's values ("" or None: the default).

    `groups`: the inventory's groups (all, tenfold_lb, ...); `connections`: each host's ansible_connection.
    """
    hosts = list(groups.get("all") or [])
    if host in (None, ""):
        lb_hosts = list(groups.get(LB_GROUP) or [])
        if not lb_hosts:
            raise StateError(
                f"tenfold_state_host is not set and group {LB_GROUP} has no host: set tenfold_state_host to"
                " the host that keeps the stack's scale lock and events"
            )
        host = lb_hosts[0]
    if not isinstance(host, str) or host not in hosts:
        known = ", ".join(hosts) or "none"
        raise StateError(
            f"tenfold_state_host={host!r} is not a host of the inventory (its hosts: {known}): it must be the"
            " inventory name of the host that keeps the stack's scale lock and events"
        )
    chosen = default_dir(stack) if directory in (None, "") else directory
    return State(host=host, dir=check_dir(chosen), local=connections.get(host) == "local")
