"""The monitor's settings: bad values fail at start, naming what is wrong."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tenfold_monitor.__main__ import main
from tenfold_monitor.service import Settings, SettingsError

# The console script `make venv` installs beside the venv's Python.
CONSOLE_SCRIPT = Path(sys.executable).parent / "tenfold-monitor"


def test_defaults_load_and_each_pool_gets_the_seed_policy():
    settings = Settings.load(None)
    assert settings.stack == "tenfold"
    assert settings.interval_s == 1.0 and settings.panic_window_s == 3.0
    assert set(settings.pools) == {"frontend", "backend"}
    # The stack's shared scale state, where scale.yml keeps it, whatever the project directory.
    assert str(settings.scale_lock()) == "/var/lib/tenfold/tenfold/scale/scale.lock"
    assert str(settings.events_log()) == "/var/lib/tenfold/tenfold/scale/scale-events.jsonl"


def test_settings_file_and_overrides_combine(tmp_path):
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps({"stack": "s", "interval_s": 1, "pools": {"backend": {"max_replicas": 20}}}))
    settings = Settings.load(path, interval_s=0.5, dry_run=None)
    assert (settings.stack, settings.interval_s, settings.dry_run) == ("s", 0.5, False)
    assert settings.pools == {"backend": {"max_replicas": 20}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"intervall_s": 2}, "unknown monitor settings: intervall_s"),
        ({"interval_s": 0}, "interval_s must be positive"),
        (
            {"pools": {"backend": {"min_replicas": 5, "max_replicas": 3}}},
            "pools.backend.min_replicas, pools.backend.max_replicas: need 0 <= min_replicas <= max_replicas",
        ),
        ({"pools": {"backend": {"target": 70}}}, "unknown scaling policy setting"),
        ({"state_dir": "logs"}, "tenfold_state_dir='logs' must be an absolute path"),
        ({"events_log": "logs/scale-events.jsonl"}, "unknown monitor settings: events_log"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(tmp_path, values, message):
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=message):
        Settings.load(path)


def test_every_bad_setting_is_named_by_its_path_in_the_settings(tmp_path):
    path = tmp_path / "monitor.json"
    pools = {"backend": {"cpu_trigger": 150, "tolerance": 1.5}, "frontend": {"memory_trigger": -1}}
    path.write_text(json.dumps({"interval_s": 0, "pools": pools}))
    with pytest.raises(SettingsError) as caught:
        Settings.load(path)
    # the policy takes a cpu trigger above 100 (a pool may run above its limit's share): not a problem
    assert [(p.settings, p.message) for p in caught.value.problems] == [
        (("interval_s",), "interval_s must be positive, got 0"),
        (("pools.backend.tolerance",), "tolerance must be below 1, got 1.5"),
        (("pools.frontend.memory_trigger",), "memory_trigger must be a number above 0 or None, got -1"),
    ]


def test_check_prints_the_problems_as_json_and_fails(tmp_path, capsys):
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps({"pools": {"backend": {"max_replica": 4}}}))
    assert main(["check", "--config", str(path)]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]
    assert problem["settings"] == ["pools.backend.max_replica"]
    assert problem["message"].startswith(
        "unknown scaling policy setting(s): max_replica; known: min_replicas"
    )


def test_check_of_good_settings_finds_nothing(tmp_path, capsys):
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps({"stack": "s", "pools": {"backend": {"max_replicas": 20}}}))
    assert main(["check", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"problems": []}


def test_the_installed_console_script_checks_settings_from_stdin():
    run = subprocess.run(
        [str(CONSOLE_SCRIPT), "check", "--config", "-"],
        input=json.dumps({"window_s": 2, "panic_window_s": 3}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",  # the installed package, not this checkout's files on the path
    )
    assert run.returncode == 1, run.stderr
    [problem] = json.loads(run.stdout)["problems"]
    assert problem["settings"] == ["window_s", "panic_window_s"]
