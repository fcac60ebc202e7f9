"""The apps' pure parts (images/app-common/tenfold_app/core.py): settings, parsing, sessions, in-flight."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "app-common"))

from tenfold_app.core import Inflight, SessionStore, Settings, env_int, parse_ms


def test_settings_come_from_the_environment():
    conf = Settings.from_env("backend", {"INSTANCE_NAME": "t-backend-2", "PORT": "9000"})
    assert conf == Settings(instance="t-backend-2", pool="backend", port=9000)


def test_settings_default_to_the_hostname_the_apps_pool_and_port_8080():
    conf = Settings.from_env("frontend", {})
    assert conf.instance
    assert (conf.pool, conf.port) == ("frontend", 8080)


def test_pool_from_the_environment_wins():
    assert Settings.from_env("frontend", {"POOL": "canary"}).pool == "canary"


@pytest.mark.parametrize("raw", ["abc", "1.5", "-3"])
def test_a_malformed_integer_setting_names_the_variable(raw):
    with pytest.raises(ValueError, match="MAX_CONCURRENCY"):
        env_int({"MAX_CONCURRENCY": raw}, "MAX_CONCURRENCY", 32, minimum=1)


def test_an_unset_integer_setting_takes_its_default():
    assert env_int({}, "MAX_CONCURRENCY", 32) == 32


@pytest.mark.parametrize(("raw", "expected"), [(None, 0), ("", 0), ("0", 0), ("250", 250), ("10000", 10000)])
def test_work_ms_accepts_0_to_10000(raw, expected):
    assert parse_ms(raw) == expected


@pytest.mark.parametrize("raw", ["10001", "-1", "1.5", "abc", " 5", "1e3", "²"])
def test_work_ms_rejects_everything_else(raw):
    with pytest.raises(ValueError, match="from 0 to 10000"):
        parse_ms(raw)


def test_a_session_counts_its_visits():
    store = SessionStore()
    sid, visits, is_new = store.visit(None)
    assert (visits, is_new) == (1, True)
    assert store.visit(sid) == (sid, 2, False)
    assert store.visit(sid) == (sid, 3, False)


def test_an_unknown_session_id_starts_a_new_session_with_a_fresh_id():
    store = SessionStore()
    sid, visits, is_new = store.visit("chosen-by-the-client")
    assert sid != "chosen-by-the-client"
    assert (visits, is_new) == (1, True)


def test_sessions_past_the_limit_drop_the_least_recently_used():
    store = SessionStore(limit=2)
    first, _, _ = store.visit(None)
    second, _, _ = store.visit(None)
    store.visit(first)  # first is now the most recent
    store.visit(None)
    assert len(store) == 2
    assert store.visit(first)[1:] == (3, False)
    assert store.visit(second)[2] is True


def test_inflight_counts_requests_in_progress():
    inflight = Inflight()
    with inflight:
        with inflight:
            assert inflight.count == 2
        assert inflight.count == 1
    assert inflight.count == 0


def test_inflight_is_released_when_a_request_fails():
    inflight = Inflight()
    with pytest.raises(RuntimeError), inflight:
        raise RuntimeError("handler failed")
    assert inflight.count == 0
