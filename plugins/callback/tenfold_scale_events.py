# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Record every scale run as one JSON line (a notification callback: it never touches stdout)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: tenfold_scale_events
type: notification
short_description: Record each scale run as one JSON line in logs/scale-events.jsonl
description:
  - Writes one JSON object per scale run, that is per playbook that publishes C(tenfold_scale) with
    C(ansible.builtin.set_stats) as C(scale.yml) does. The object holds the start and end time, the trigger,
    the pools with direction and replicas from and to, the result, the failed task if any, and the duration,
    and C(recovered_from) (the lock's owner) when the run took over the lock of a killed run.
  - The monitor reads this file for its cooldown, so a restart does not reset it.
  - A notification callback, so it works under plain C(ansible-playbook) and under ansible-runner (AWX).
  - While the run holds the scale lock (a C(tenfold_lock) task took it), it renews the lock's lease every
    20 s, so that a run on another host sharing the lock sees this one alive, and a dead one as gone.
requirements:
  - enabled in ansible.cfg (C(callbacks_enabled)) or with C(ANSIBLE_CALLBACKS_ENABLED)
options:
  log_path:
    description: File the events are appended to. A relative path is taken from the playbook's directory.
    type: path
    default: logs/scale-events.jsonl
    env:
      - name: TENFOLD_SCALE_EVENTS_LOG
    ini:
      - section: callback_tenfold_scale_events
        key: log_path
"""

import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ansible import context
from ansible.plugins.callback import CallbackBase

AWX_ENV = ("AWX_JOB_ID", "JOB_ID", "AWX_HOST")
_UTILS = Path(__file__).resolve().parents[1] / "module_utils"


def _util(name: str) -> Any:
    """module_utils/<name>.py, loaded from its file as plugins/action/tenfold_lock.py loads it."""
    key = f"{name}_controller"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, _UTILS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _message(msg: Any) -> str | None:
    """A task's msg as one line of at most 500 characters (nginx's messages come as a list of lines)."""
    if isinstance(msg, (list, tuple)):
        msg = " ".join(str(line) for line in msg)
    text = str(msg or "").strip()
    return text[:500] or None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "tenfold_scale_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None) -> None:
        super().__init__(display=display)
        self._start = 0.0
        self._playbook_dir = os.getcwd()
        self._extra_vars: dict[str, Any] = {}
        self._failed_task: str | None = None
        self._failed_msg: str | None = None
        self._unreachable = False
        self._lease: threading.Event | None = None  # set to stop renewing the scale lock's lease

    # --- collecting -----------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._start = time.time()
        self._playbook_dir = os.path.dirname(os.path.abspath(playbook._file_name))

    def v2_playbook_on_play_start(self, play: Any) -> None:
        manager = play.get_variable_manager()
        if manager is not None and not self._extra_vars:
            self._extra_vars = dict(manager.extra_vars or {})

    def v2_runner_on_ok(self, result: Any) -> None:
        outcome = result._result
        if result._task.action.split(".")[-1] != "tenfold_lock":
            return
        if outcome.get("acquired") and outcome.get("owner") and self._lease is None:
            code = _util("tenfold_lock")
            owner = code.Owner(**outcome["owner"])
            self._lease = code.keep_renewing(outcome["path"], owner, code.RENEW_EVERY_S)
        elif outcome.get("released") is not None and self._lease is not None:
            self._lease.set()
            self._lease = None

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if ignore_errors or self._failed_task:
            return
        self._failed_task = result.task_name or result._task.get_name()
        self._failed_msg = _message(result._result.get("msg"))

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._unreachable = True
        if not self._failed_task:
            self._failed_task = result.task_name or result._task.get_name()
            self._failed_msg = _message(result._result.get("msg"))

    # --- writing --------------------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats: Any) -> None:
        if self._lease is not None:
            self._lease.set()
        custom = (getattr(stats, "custom", {}) or {}).get("_run", {})
        scale = custom.get("tenfold_scale")
        if scale is None or context.CLIARGS.get("check"):
            return  # not a scale run, or one that only showed what it would do
        totals = [stats.summarize(host) for host in stats.processed]
        failed = (
            bool(self._failed_task)
            or self._unreachable
            or any(t["failures"] or t["unreachable"] for t in totals)
        )
        event = _util("tenfold_events").event(
            start=self._start,
            end=time.time(),
            trigger=self._trigger(),
            stack=scale.get("stack"),
            request=scale.get("request", {}),
            pools=scale.get("pools", []),
            result="failed" if failed else "ok",
            failed_task=self._failed_task,
            error=self._failed_msg,
            recovered_from=scale.get("recovered_from"),
        )
        self._append(event)

    def _trigger(self) -> str:
        given = str(self._extra_vars.get("trigger", "") or "").strip()
        if given:
            return given
        if any(os.environ.get(name) for name in AWX_ENV):
            return "awx"
        return "manual"

    def _append(self, event: dict) -> None:
        path = self.get_option("log_path")
        if not os.path.isabs(path):
            path = os.path.join(self._playbook_dir, path)
        try:
            _util("tenfold_events").append(path, event)
        except OSError as exc:
            self._display.warning(f"tenfold_scale_events: could not write {path}: {exc}")
