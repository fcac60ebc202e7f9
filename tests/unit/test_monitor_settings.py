"""The monitor's settings: bad values fail at start, naming what is wrong."""

import json

import pytest
from tenfold_monitor.service import Settings


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
        ({"pools": {"backend": {"min_replicas": 5, "max_replicas": 3}}}, "invalid scaling policy"),
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
