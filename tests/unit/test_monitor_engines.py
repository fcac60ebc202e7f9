"""The monitor's Docker engines: one per host, a failed one rested, SSH options through a PATH wrapper."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from tenfold_monitor import collect
from tenfold_monitor.collect import Collector
from tenfold_monitor.engines import EngineHost, Engines, use_ssh_options
from test_monitor_collect import FakeApi, closed_port_url


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Broken:
    """An engine whose every call fails as a lost host's does."""

    closed = False

    @property
    def api(self):
        return self

    def containers(self, all: bool, filters: dict) -> list:
        raise OSError("Connection timed out")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"url": "ssh://root@10.0.0.1"}, "needs a name"),
        ({"name": "", "url": ""}, "needs a name"),
        ({"name": "d1", "url": "http://10.0.0.1"}, "is not ssh://, unix:// or tcp://"),
        ("d1", "needs a name"),
    ],
)
def test_a_malformed_docker_host_is_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        EngineHost.from_mapping(raw)


def test_a_host_is_local_without_a_url():
    assert EngineHost.from_mapping({"name": "here"}) == EngineHost("here", "")


def test_a_failed_host_rests_then_is_asked_again_with_a_new_client():
    clock, made = Clock(), []
    host = EngineHost("d1", "ssh://root@10.0.0.1")
    engines = Engines(
        [host], retry_s=10, connect=lambda h, size: made.append(Broken()) or made[-1], clock=clock
    )
    first = engines.client(host)
    assert engines.client(host) is first  # one client while it works
    engines.failed(host)
    assert first.closed and engines.resting(host)
    clock.now = 9.9
    assert engines.resting(host)
    clock.now = 10.0
    assert not engines.resting(host)
    assert engines.client(host) is not first and len(made) == 2


def test_the_collector_counts_the_hosts_that_answer_and_names_the_lost_one():
    hosts = [EngineHost("d1", "ssh://root@10.0.0.1"), EngineHost("d2", "ssh://root@10.0.0.2")]
    fakes = {"d1": FakeApi(), "d2": Broken()}
    engines = Engines(hosts, connect=lambda h, size: fakes[h.name])
    collector = Collector("s", closed_port_url("/status"), closed_port_url("/nginx_status"), engines=engines)
    snap = collector.collect(1000.0)
    assert snap.unreachable_hosts == ["d2"]
    assert snap.pools["backend"].replicas == 1  # d1's replica; d2's are not counted
    assert any(w.startswith("Docker host d2 unreachable: Connection timed out") for w in snap.warnings)
    again = collector.collect(1001.0)  # d2 rests: not asked again at once
    assert again.unreachable_hosts == ["d2"] and fakes["d2"].closed


def test_no_host_answering_leaves_the_replicas_unknown():
    engines = Engines([EngineHost("d1", "ssh://x@10.0.0.1")], connect=lambda h, size: Broken())
    collector = Collector("s", closed_port_url("/status"), closed_port_url("/nginx_status"), engines=engines)
    snap = collector.collect(1000.0)
    assert snap.unreachable_hosts == ["d1"] and snap.pools["backend"].replicas is None


def test_ssh_options_reach_the_real_ssh_through_the_wrapper(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.environ["PATH"])
    key = tmp_path / "id key"  # a space, to show the quoting holds
    key.write_text("")
    directory = use_ssh_options(["-i", str(key), "-o", "ConnectTimeout=5"], tmp_path)
    assert os.environ["PATH"].startswith(f"{directory}{os.pathsep}")
    # ssh -G prints the configuration it would use, without connecting anywhere
    shown = subprocess.run(["ssh", "-G", "fleet-d1"], capture_output=True, text=True, check=True).stdout
    assert "batchmode yes" in shown
    assert "connecttimeout 5" in shown
    assert f"identityfile {key}" in shown


def test_no_ssh_option_changes_nothing(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    assert use_ssh_options([]) is None
    assert os.environ["PATH"] == "/usr/bin"


class Hanging(Broken):
    """An engine whose listing waits, as one over SSH to a host that is gone does, until it is closed."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def containers(self, all: bool, filters: dict) -> list:
        self.release.wait(10)
        raise OSError("Broken pipe")

    def close(self) -> None:
        self.closed = True
        self.release.set()


def test_a_remote_host_that_does_not_answer_does_not_hold_up_the_tick(monkeypatch):
    monkeypatch.setattr(collect, "REMOTE_READ_S", 0.2)
    hosts = [EngineHost("d1", "ssh://root@10.0.0.1"), EngineHost("d2", "ssh://root@10.0.0.2")]
    fakes = {"d1": FakeApi(), "d2": Hanging()}
    engines = Engines(hosts, connect=lambda h, size: fakes[h.name])
    collector = Collector("s", closed_port_url("/status"), closed_port_url("/nginx_status"), engines=engines)
    started = time.monotonic()
    snap = collector.collect(1000.0)
    assert time.monotonic() - started < 3
    assert snap.unreachable_hosts == ["d2"] and snap.pools["backend"].replicas == 1
    assert "Docker host d2 unreachable: no answer within 0.2 s" in " | ".join(snap.warnings)
    assert fakes["d2"].closed  # its client closed: the waiting reading ends
    collector.close()
