"""The scale-events callback records each run on the stack's state host: in its own process when that host is
this machine, else with one ad hoc run that reaches the host as the run did."""

import json
from types import SimpleNamespace

from conftest import load_plugin

callback = load_plugin("callback", "scale_events")
EVENT = {"start": "2026-12-06T05:22:08.123Z", "result": "ok", "pools": []}


def test_the_ad_hoc_run_takes_over_how_the_run_reaches_its_hosts():
    cli = {
        "inventory": ("inventories/fleet",),
        "extra_vars": ("@stack.yml", "tenfold_state_dir=/srv/s"),
        "remote_user": "ops",
        "private_key_file": "/keys/id",
        "become": True,
        "become_user": None,
        "ssh_common_args": "-o ConnectTimeout=5",
        "vault_password_files": ("/v1",),
        "check": True,  # not a way to reach a host: not passed on
        "forks": 10,
        "connection": "ssh",  # the default: the ad hoc run has it too
    }
    defaults = {"connection": "ssh"}
    command = callback.adhoc_command(
        "/venv/bin/ansible", "lb1", "tenfold.stack.scale_event", {"path": "/p"}, cli, defaults
    )
    assert command[:6] == [
        "/venv/bin/ansible",
        "lb1",
        "-m",
        "tenfold.stack.scale_event",
        "-a",
        '{"path": "/p"}',
    ]
    assert command[6:] == [
        "-i", "inventories/fleet",
        "-e", "@stack.yml", "-e", "tenfold_state_dir=/srv/s",
        "-u", "ops",
        "--private-key", "/keys/id",
        "--ssh-common-args", "-o ConnectTimeout=5",
        "--become",
        "--vault-password-file", "/v1",
    ]  # fmt: skip


def test_a_local_state_host_gets_the_event_appended_here_without_an_ansible_process(tmp_path, monkeypatch):
    def no_ansible(*args):
        raise AssertionError("an ansible process for a local state host")

    monkeypatch.setattr(callback.CallbackModule, "_on_state_host", no_ansible)
    events = tmp_path / "state" / "scale-events.jsonl"
    callback.CallbackModule()._record({"host": "localhost", "events": str(events), "local": True}, EVENT)
    assert [json.loads(line) for line in events.read_text().splitlines()] == [EVENT]


def test_a_remote_state_host_gets_the_event_through_the_scale_event_module(monkeypatch):
    calls = []
    monkeypatch.setattr(
        callback.CallbackModule, "_on_state_host", lambda self, *args: calls.append(args) or (True, {})
    )
    state = {"host": "lb1", "events": "/var/lib/tenfold/web/scale/scale-events.jsonl", "local": False}
    callback.CallbackModule()._record(state, EVENT)
    assert calls == [("lb1", "tenfold.stack.scale_event", {"path": state["events"], "event": EVENT})]


def test_an_event_the_state_host_did_not_take_is_shown_in_a_warning(monkeypatch):
    warnings = []
    monkeypatch.setattr(callback.CallbackModule, "_on_state_host", lambda *a: (False, "lb1 is unreachable"))
    module = callback.CallbackModule()
    module._display = SimpleNamespace(warning=warnings.append)
    module._record({"host": "lb1", "events": "/e.jsonl", "local": False}, EVENT)
    [warning] = warnings
    assert "could not write /e.jsonl on lb1: lb1 is unreachable" in warning
    assert json.dumps(EVENT, sort_keys=True) in warning  # kept in the job's output, to be added by hand
