"""The scale lock: one holder at a time, bounded waits, and recovery of a lock left by a killed run."""

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from types import SimpleNamespace

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import lock as tl
from conftest import load_plugin


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = tl.time.monotonic() + timeout
    while tl.time.monotonic() < deadline:
        if predicate():
            return True
        tl.time.sleep(0.02)
    return False


def test_free_lock_is_taken_and_released(tmp_path):
    path = str(tmp_path / "scale.lock")
    me = tl.owner_for(os.getpid(), run="test")
    outcome = tl.acquire(path, me, timeout=1)
    assert outcome.acquired and outcome.recovered is None
    assert tl.read_owner(path) == me
    assert tl.release(path, me)
    assert not os.path.exists(path)


def test_lock_held_by_a_live_run_times_out_with_its_owner_named(tmp_path, live_process):
    path = str(tmp_path / "scale.lock")
    tl.acquire(path, tl.owner_for(live_process.pid, run="scale backend to 7"), timeout=1)
    clock = iter(range(100))
    with pytest.raises(tl.LockError, match=r"pid \d+ .*scale backend to 7.*within 3s"):
        tl.acquire(
            path, tl.owner_for(os.getpid()), timeout=3, sleep=lambda _: None, clock=lambda: next(clock)
        )


def test_lock_left_by_a_killed_run_is_recovered(tmp_path):
    path = str(tmp_path / "scale.lock")
    ghost = tl.Owner(pid=dead_pid(), start_ticks=1, host=tl.socket.gethostname(), since=0.0, run="killed")
    tl.acquire(path, ghost, timeout=0)
    me = tl.owner_for(os.getpid())
    outcome = tl.acquire(path, me, timeout=0)
    assert outcome.acquired and outcome.recovered == ghost
    assert tl.read_owner(path) == me


def test_reused_pid_is_not_mistaken_for_the_owner(tmp_path, live_process):
    path = str(tmp_path / "scale.lock")
    real = tl.owner_for(live_process.pid)
    impostor = tl.Owner(pid=real.pid, start_ticks=real.start_ticks - 1, host=real.host, since=0.0)
    tl.acquire(path, impostor, timeout=0)
    assert tl.acquire(path, tl.owner_for(os.getpid()), timeout=0).recovered == impostor


def test_only_the_owner_releases(tmp_path, live_process):
    path = str(tmp_path / "scale.lock")
    owner = tl.owner_for(live_process.pid)
    tl.acquire(path, owner, timeout=0)
    assert not tl.release(path, tl.owner_for(os.getpid()))
    assert tl.read_owner(path) == owner


def test_unreadable_lock_file_is_treated_as_stale(tmp_path):
    path = tmp_path / "scale.lock"
    path.write_text("{not json")
    assert tl.acquire(str(path), tl.owner_for(os.getpid()), timeout=0).acquired


def test_playbook_pid_fails_clearly_outside_ansible():
    with pytest.raises(tl.LockError, match="not running under ansible-playbook"):
        tl.playbook_pid(os.getpid())


def test_run_takes_and_gives_back_the_lock_and_changes_nothing_in_check_mode(tmp_path):
    path = str(tmp_path / "scale.lock")
    params = {"path": path, "state": "acquired", "timeout": 1, "run": "test"}
    result, warning = tl.run(params, check_mode=True, pid=os.getpid())
    assert result["acquired"] is False and not os.path.exists(path) and warning is None
    result, warning = tl.run(params, check_mode=False, pid=os.getpid())
    assert result["acquired"] is True and result["changed"] is True and warning is None
    assert tl.read_owner(path).pid == os.getpid()
    result, _ = tl.run({**params, "state": "released"}, check_mode=False, pid=os.getpid())
    assert result == {"changed": True, "released": True} and not os.path.exists(path)


def test_run_recovers_a_dead_runs_lock_with_a_warning_and_names_the_path_on_failure(tmp_path, live_process):
    path = str(tmp_path / "scale.lock")
    dead = tl.owner_for(os.getpid(), run="killed run")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({**asdict(dead), "pid": dead_pid()}, handle)
    result, warning = tl.run({"path": path, "timeout": 1}, check_mode=False, pid=os.getpid())
    assert result["recovered_from"]["run"] == "killed run"
    assert warning.startswith("recovered the lock left by a run that is gone")
    with pytest.raises(tl.LockError, match=f"scale lock {path}: another run holds"):
        tl.run({"path": path, "timeout": 0}, check_mode=False, pid=live_process.pid)


def test_the_lock_appears_with_its_owner_written_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "scale.lock")
    me = tl.owner_for(os.getpid(), run="test")
    tl.acquire(path, me, timeout=0)
    assert json.loads((tmp_path / "scale.lock").read_text()) == asdict(me)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale.lock"]


def test_of_runs_recovering_the_same_stale_lock_exactly_one_wins(tmp_path):
    path = str(tmp_path / "scale.lock")
    ghost = tl.Owner(pid=dead_pid(), start_ticks=1, host=tl.socket.gethostname(), since=0.0, run="killed")
    tl.acquire(path, ghost, timeout=0)
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(8)]
    try:
        owners = [tl.owner_for(p.pid) for p in sleepers]
        barrier = threading.Barrier(len(owners))
        results: list[object] = []

        def recover(owner: tl.Owner) -> None:
            barrier.wait()
            try:
                results.append(tl.acquire(path, owner, timeout=0))
            except tl.LockError as exc:
                results.append(exc)

        threads = [threading.Thread(target=recover, args=(o,)) for o in owners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [r for r in results if isinstance(r, tl.Outcome)]
        assert len(results) == len(owners) and len(winners) == 1
        assert winners[0].recovered == ghost
        assert tl.read_owner(path) in owners
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()


def test_a_lock_from_another_host_is_held_for_its_lease_then_recovered(tmp_path):
    path = str(tmp_path / "scale.lock")
    now = tl.time.time()
    remote = tl.Owner(pid=4242, start_ticks=7, host="lb-2.example", since=now - 30, lease_s=60)
    tl.acquire(path, remote, timeout=0)
    me = tl.owner_for(os.getpid())
    with pytest.raises(tl.LockError, match=r"lb-2\.example"):
        tl.acquire(path, me, timeout=0)
    expired = tl.Owner(pid=4242, start_ticks=7, host="lb-2.example", since=now - 61, lease_s=60)
    (tmp_path / "scale.lock").write_text(json.dumps(asdict(expired)))
    os.utime(path, (now - 61, now - 61))  # not renewed since
    outcome = tl.acquire(path, me, timeout=0)
    assert outcome.recovered == expired and tl.read_owner(path) == me


def test_a_lock_from_another_host_stays_held_while_its_holder_renews_it(tmp_path):
    path = str(tmp_path / "scale.lock")
    now = tl.time.time()
    remote = tl.Owner(pid=4242, start_ticks=7, host="lb-2.example", since=now - 300, lease_s=60)
    tl.acquire(path, remote, timeout=0)
    os.utime(path, (now - 61, now - 61))
    assert not tl.is_alive(tl.read_owner(path))  # taken 5 min ago, last renewed 61 s ago: gone
    assert tl.renew(path, remote)  # what its callback does every 20 s
    assert tl.is_alive(tl.read_owner(path))
    with pytest.raises(tl.LockError, match=r"lb-2\.example"):
        tl.acquire(path, tl.owner_for(os.getpid()), timeout=0)


def test_only_the_holder_renews_and_a_released_lock_is_not_renewed_back(tmp_path):
    path = str(tmp_path / "scale.lock")
    me = tl.owner_for(os.getpid())
    other = tl.Owner(pid=4242, start_ticks=7, host="lb-2.example", since=0.0)
    assert not tl.renew(path, me)  # no lock
    tl.acquire(path, other, timeout=0)
    assert not tl.renew(path, me)  # not ours
    os.unlink(path)
    tl.acquire(path, me, timeout=0)
    assert tl.renew(path, me)
    tl.release(path, me)
    assert not tl.renew(path, me) and not os.path.exists(path)


def test_the_lease_is_renewed_in_the_background_until_stopped_or_lost(tmp_path):
    path = str(tmp_path / "scale.lock")
    me = tl.owner_for(os.getpid())
    tl.acquire(path, me, timeout=0)
    os.utime(path, (1.0, 1.0))
    stop = tl.keep_renewing(path, me, every=0.05)
    try:
        assert wait_until(lambda: os.stat(path).st_mtime > 1.0)
    finally:
        stop.set()
    tl.release(path, me)
    tl.time.sleep(0.2)
    assert not os.path.exists(path)  # the thread did not bring it back


def test_a_lock_file_written_before_leases_reads_with_the_default_lease(tmp_path):
    path = tmp_path / "scale.lock"
    path.write_text(json.dumps({"pid": 1, "start_ticks": 2, "host": "old", "since": 5.0, "run": ""}))
    assert tl.read_owner(str(path)).lease_s == tl.DEFAULT_LEASE_S


def test_the_scale_events_callback_renews_the_lease_while_its_run_holds_the_lock(tmp_path, monkeypatch):
    callback = load_plugin("callback", "scale_events")
    code = callback.lock
    monkeypatch.setattr(code, "RENEW_EVERY_S", 0.05)
    path = str(tmp_path / "scale.lock")
    me = code.owner_for(os.getpid())
    code.acquire(path, me, timeout=0)
    os.utime(path, (1.0, 1.0))
    events = callback.CallbackModule()
    task = SimpleNamespace(resolved_action="tenfold.stack.lock")
    events.v2_runner_on_ok(
        SimpleNamespace(_task=task, _result={"acquired": True, "lock": path, "owner": asdict(me)})
    )
    assert wait_until(lambda: os.stat(path).st_mtime > 1.0)
    events.v2_runner_on_ok(SimpleNamespace(_task=task, _result={"changed": True, "released": True}))
    os.utime(path, (1.0, 1.0))
    tl.time.sleep(0.2)
    assert os.stat(path).st_mtime == 1.0  # released: no more renewals


def test_a_lock_taken_for_a_run_on_another_host_names_that_run_and_lives_by_its_lease(tmp_path):
    """What the module does on a remote state host: the owner is the controller's ansible-playbook run."""
    path = str(tmp_path / "scale.lock")
    controller = {"pid": 4242, "start_ticks": 7, "host": "laptop", "since": tl.time.time(), "run": "scale"}
    result, _ = tl.run({"path": path, "state": "acquired", "timeout": 0, "owner": controller}, False, None)
    assert result["acquired"] and result["owner"]["host"] == "laptop"
    holder = tl.read_owner(path)
    assert (holder.pid, holder.host) == (4242, "laptop")
    assert tl.is_alive(holder)  # within its lease: pid 4242 here says nothing about the laptop's run
    os.utime(path, (1.0, 1.0))
    renewed, _ = tl.run({"path": path, "state": "renewed", "owner": controller}, False, None)
    assert renewed == {"changed": False, "renewed": True} and os.stat(path).st_mtime > 1.0
    other = {**controller, "pid": 4343}
    assert tl.run({"path": path, "state": "renewed", "owner": other}, False, None)[0]["renewed"] is False
    assert tl.run({"path": path, "state": "released", "owner": controller}, False, None)[0]["released"]
    assert not os.path.exists(path)


def test_a_malformed_owner_is_refused_and_no_lock_is_taken(tmp_path):
    path = str(tmp_path / "scale.lock")
    with pytest.raises(tl.LockError, match="owner must name a run"):
        tl.run({"path": path, "state": "acquired", "owner": {"pid": 1}}, False, None)
    assert not os.path.exists(path)


def test_the_callback_renews_a_remote_lock_through_the_state_host_until_it_is_not_its_own(monkeypatch):
    callback = load_plugin("callback", "scale_events")
    monkeypatch.setattr(callback.lock, "RENEW_EVERY_S", 0.05)
    calls = []

    def on_state_host(self, host, module, args):
        calls.append((host, module, args))
        return True, {"renewed": len(calls) < 3}

    monkeypatch.setattr(callback.CallbackModule, "_on_state_host", on_state_host)
    owner = {"pid": 1, "start_ticks": 2, "host": "laptop", "since": 3.0, "run": "", "lease_s": 120.0}
    events = callback.CallbackModule()
    result = {
        "acquired": True,
        "local": False,
        "host": "lb1",
        "lock": "/var/lib/x/scale.lock",
        "owner": owner,
    }
    events.v2_runner_on_ok(
        SimpleNamespace(_task=SimpleNamespace(resolved_action="tenfold.stack.lock"), _result=result)
    )
    assert wait_until(lambda: len(calls) >= 3)
    tl.time.sleep(0.2)
    assert len(calls) == 3  # the third said the lock is not its own any more: no more renewals
    assert calls[0] == (
        "lb1",
        "tenfold.stack.lock",
        {"path": "/var/lib/x/scale.lock", "state": "renewed", "owner": owner},
    )
