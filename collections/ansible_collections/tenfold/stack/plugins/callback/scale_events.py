# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Record every scale run as one JSON line (a notification callback: it never touches stdout)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: scale_events
type: notification
short_description: Record each scale run as one JSON line in the stack's scale events on its state host
description:
  - Writes one JSON object per scale run, that is per playbook that publishes C(tenfold_scale) with
    C(ansible.builtin.set_stats) as C(scale.yml) does. The object holds the start and end time, the trigger,
    the pools with direction and replicas from and to, the result, the failed task if any, and the duration,
    and C(recovered_from) (the lock's owner, from the C(tenfold.stack.lock) task's result) when the run took
    over the lock of a killed run.
  - The events file is C(tenfold_scale.state.events) on the host C(tenfold_scale.state.host), as the
    C(tenfold.stack.state) lookup resolves them (C(<tenfold_state_dir>/scale-events.jsonl) on the state host).
    The monitor reads it for its cooldown, so a restart does not reset it.
  - When the state host is this machine (connection local) the event is appended here; otherwise it is
    delivered at the end of the run with one C(ansible) ad hoc run of the C(tenfold.stack.scale_event) module
    on the state host, with this run's inventory, extra vars and connection options.
  - A notification callback, so it works under plain C(ansible-playbook) and under ansible-runner (AWX).
  - While the run holds the scale lock (a C(tenfold.stack.lock) task took it), it renews the lock's lease
    every 20 s (on a remote state host with C(tenfold.stack.lock state=renewed) ad hoc), so that others see
    this run alive, and a killed one as gone once its lease runs out.
requirements:
  - enabled in ansible.cfg (C(callbacks_enabled)) or with C(ANSIBLE_CALLBACKS_ENABLED)
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible import constants as C
from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible_collections.tenfold.stack.plugins.module_utils import events, lock

AWX_ENV = ("AWX_JOB_ID", "JOB_ID", "AWX_HOST")
# The collections directory this collection was loaded from (.../ansible_collections/tenfold/stack/plugins/
# callback/scale_events.py), for the ad hoc runs: they find this same copy of it.
_COLLECTIONS = Path(__file__).resolve().parents[5]
# Seconds an ad hoc run on a remote state host may take (an SSH connection, a module process).
ADHOC_TIMEOUT_S = 120.0
# ansible-playbook's options an ad hoc run on the state host takes over, to reach the host as this run does:
# (CLIARGS key, option); a tuple value repeats the option, True gives the bare flag.
_PASSED_ON = (
    ("inventory", "-i"),
    ("extra_vars", "-e"),
    ("remote_user", "-u"),
    ("private_key_file", "--private-key"),
    ("connection", "-c"),
    ("timeout", "-T"),
    ("ssh_common_args", "--ssh-common-args"),
    ("ssh_extra_args", "--ssh-extra-args"),
    ("sftp_extra_args", "--sftp-extra-args"),
    ("scp_extra_args", "--scp-extra-args"),
    ("become", "--become"),
    ("become_method", "--become-method"),
    ("become_user", "--become-user"),
    ("vault_ids", "--vault-id"),
    ("vault_password_files", "--vault-password-file"),
)


def adhoc_command(
    ansible: str,
    host: str,
    module: str,
    args: Mapping[str, Any],
    cli: Mapping,
    defaults: Mapping | None = None,
) -> list[str]:
    """`ansible HOST -m MODULE -a JSON` with the options of this run that say how to reach the host: those set
    and not at their `defaults` (the ad hoc run has the same defaults)."""
    defaults = defaults or {}
    command = [ansible, host, "-m", module, "-a", json.dumps(dict(args))]
    for key, option in _PASSED_ON:
        value = cli.get(key)
        if value in (None, "", False, (), []) or (key in defaults and value == defaults[key]):
            continue
        if value is True:
            command.append(option)
        elif isinstance(value, (list, tuple)):
            command += [part for item in value for part in (option, str(item))]
        else:
            command += [option, str(value)]
    return command


def _message(msg: Any) -> str | None:
    """A task's msg as one line of at most 500 characters (nginx's messages come as a list of lines)."""
    if isinstance(msg, (list, tuple)):
        msg = " ".join(str(line) for line in msg)
    text = str(msg or "").strip()
    return text[:500] or None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "tenfold.stack.scale_events"
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
        self._recovered_from: dict[str, Any] | None = None  # the killed run whose lock this run took

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
        if result._task.resolved_action != "tenfold.stack.lock":
            return
        if outcome.get("recovered_from"):
            self._recovered_from = outcome["recovered_from"]  # the killed run recorded no event itself
        if outcome.get("acquired") and outcome.get("owner") and self._lease is None:
            if outcome.get("local", True):
                owner = lock.Owner(**outcome["owner"])
                self._lease = lock.keep_renewing(outcome["lock"], owner, lock.RENEW_EVERY_S)
            else:
                self._lease = self._renew_remotely(outcome["host"], outcome["lock"], outcome["owner"])
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
        event = events.event(
            start=self._start,
            end=time.time(),
            trigger=self._trigger(),
            stack=scale.get("stack"),
            request=scale.get("request", {}),
            pools=scale.get("pools", []),
            result="failed" if failed else "ok",
            failed_task=self._failed_task,
            error=self._failed_msg,
            recovered_from=self._recovered_from,
        )
        self._record(scale.get("state") or {}, event)

    def _trigger(self) -> str:
        given = str(self._extra_vars.get("trigger", "") or "").strip()
        if given:
            return given
        if any(os.environ.get(name) for name in AWX_ENV):
            return "awx"
        return "manual"

    def _record(self, state: Mapping[str, Any], event: dict) -> None:
        """Append the event to the state host's events file: here, or there with one ad hoc run."""
        path, host = state.get("events"), state.get("host")
        if not path or not host:
            self._display.warning(
                f"tenfold.stack.scale_events: no state host given, event not recorded: {event}"
            )
            return
        if state.get("local"):
            try:
                events.append(path, event)
            except OSError as exc:
                self._display.warning(f"tenfold.stack.scale_events: could not write {path}: {exc}")
            return
        done, detail = self._on_state_host(host, "tenfold.stack.scale_event", {"path": path, "event": event})
        if not done:
            # The job's output keeps the event, so it can be added by hand.
            self._display.warning(
                f"tenfold.stack.scale_events: could not write {path} on {host}: {detail};"
                f" the event: {json.dumps(event, sort_keys=True)}"
            )

    def _renew_remotely(self, host: str, path: str, owner: dict) -> threading.Event:
        """Renew the lease of the lock on a remote state host every RENEW_EVERY_S, until the returned event is
        set or the lock is not this run's any more."""
        stop = threading.Event()
        args = {"path": path, "state": "renewed", "owner": owner}

        def loop() -> None:
            while not stop.wait(lock.RENEW_EVERY_S):
                done, detail = self._on_state_host(host, "tenfold.stack.lock", args)
                if done and not detail.get("renewed"):
                    return  # released (or taken over): nothing of ours to renew
                if not done:
                    self._display.warning(
                        f"tenfold.stack.scale_events: the lease of {path} on {host} not renewed: {detail}"
                    )

        threading.Thread(target=loop, name="tenfold-lock-lease-remote", daemon=True).start()
        return stop

    def _on_state_host(self, host: str, module: str, args: dict) -> tuple[bool, Any]:
        """Run `module` on `host` with one `ansible` ad hoc run: (succeeded, its result or why not)."""
        ansible = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "ansible")
        if not os.access(ansible, os.X_OK):
            ansible = shutil.which("ansible") or "ansible"
        env = {
            **os.environ,
            # This collection first; output as JSON, read here, never shown or recorded as a job's. No other
            # callback may print to it: only this one is enabled (it does nothing in an ad hoc run).
            "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join([str(_COLLECTIONS), *C.COLLECTIONS_PATHS]),
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_CALLBACKS_ENABLED": "tenfold.stack.scale_events",
        }
        if C.CONFIG_FILE:
            env["ANSIBLE_CONFIG"] = C.CONFIG_FILE
        defaults = {
            "connection": C.DEFAULT_TRANSPORT,
            "become_method": C.DEFAULT_BECOME_METHOD,
            "timeout": C.DEFAULT_TIMEOUT,
        }
        command = adhoc_command(ansible, host, module, args, context.CLIARGS, defaults)
        try:
            proc = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=ADHOC_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        try:
            result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][host]
        except (ValueError, KeyError, IndexError, TypeError):
            return False, f"ansible exited {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}"
        if result.get("failed") or result.get("unreachable"):
            return False, _message(result.get("msg")) or "failed"
        return True, result
