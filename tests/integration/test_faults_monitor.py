"""Faults under continuous load, with the monitor running: a replica killed or gone, the monitor killed in the
middle of a scale run, the LB's status (the metrics source) gone. Every test runs HTTPS load through the LB
from addresses off the allowlist, 5 req/s each (within the rate limit), and puts the stack back: backend at
3."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest
from benchkit.load import Load
from conftest import pool_containers, stack_containers
from helpers import SCALE_LOCK, access_log, backend_entries, events_count, events_since, playbook, wait_for
from test_monitor import MonitorProcess, backend_replicas

pytestmark = pytest.mark.integration

SOURCES = [f"127.0.6.{i}" for i in range(60, 64)]
API = ["/api/whoami", "/api/work?ms=20"]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def backend_port(stack, index: int) -> int:
    return int(stack.vars["app_pools_backend_port_base"]) + index


def running_backends(engine, stack) -> list[str]:
    return [c.name for c in pool_containers(engine, stack, "backend") if c.status == "running"]


def in_lb(stack, port: int) -> bool:
    """Whether the LB's backend pool has a member at that port."""
    return any(m["port"] == port for m in stack.lb_pool("backend")["members"])


def retried(entries: list[dict]) -> int:
    """Requests that nginx sent on to a second server (two addresses)."""
    return sum("," in entry.get("upstream_addr", "") for entry in entries)


def cut_responses(load: Load) -> int:
    """Failed requests whose answer had begun (headers and part of the body, then the connection broke)."""
    return sum(n for outcome, n in load.tally.failures.items() if outcome.endswith(": IncompleteRead"))


def put_back(stack) -> None:
    run = playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=3")
    assert run.rc == 0, run.output[-3000:]
    assert stack.wait_until_none_rests("backend")


def test_a_killed_replica_and_a_replica_gone_for_good_fail_no_get_and_the_pool_comes_back(
    engine, stack, tmp_path, figures
):
    # The emergency rule is set high: what this test checks is that the pool comes back to its minimum, not
    # how the monitor answers the few 5xx a killed replica's requests in flight may get.
    monitor = MonitorProcess(stack, tmp_path, cooldown_s=60.0, emergency_error_rate=0.5)
    before = events_count()
    offset = access_log(stack).stat().st_size
    victim = engine.containers.get(f"{stack.name}-backend-2")
    restarts = victim.attrs["RestartCount"]
    monitor.start()
    try:
        time.sleep(3)  # the monitor's window fills
        with Load(stack.https_port, API, rate=20, workers=4, sources=SOURCES, max_seconds=90) as load:
            time.sleep(2)
            killed_at = time.time()
            os.kill(victim.attrs["State"]["Pid"], signal.SIGKILL)  # docker-init, the container's PID 1

            def restarted() -> bool:
                victim.reload()
                return victim.attrs["RestartCount"] > restarts and answers(backend_port(stack, 2))

            assert wait_for(restarted, timeout=30, step=0.1), victim.logs(tail=20)
            kill_back_s = time.time() - killed_at
            time.sleep(3)
            kill_failed = load.tally.failed
            state = tmp_path / "state.json"
            assert wait_for(lambda: not json.loads(state.read_text())["scale_run_in_progress"], timeout=60)

            # Gone for good: replica 2 stopped (a manual stop is one the restart policy honours: it stays
            # exited) and replica 3 removed. The pool is below its minimum: the monitor scales it back.
            gone_at, gone_offset = time.time(), access_log(stack).stat().st_size
            engine.containers.get(f"{stack.name}-backend-2").kill()
            engine.containers.get(f"{stack.name}-backend-3").remove(force=True)
            assert wait_for(
                lambda: (
                    len(running_backends(engine, stack)) == 3
                    and all(answers(backend_port(stack, i)) for i in (1, 2, 3))
                ),
                timeout=90,
            ), monitor.log()[-3000:]
            gone_back_s = time.time() - gone_at
            assert wait_for(lambda: [r for r in events_since(before) if epoch(r["start"]) >= gone_at], 30)
            time.sleep(1.5)  # nginx flushes its log every second
        runs = events_since(before)
        kill_runs = [r for r in runs if epoch(r["start"]) < gone_at]
        gone_runs = [r for r in runs if epoch(r["start"]) >= gone_at]
        end = access_log(stack).stat().st_size
        kill_entries, gone_entries = (
            backend_entries(stack, offset, gone_offset),
            backend_entries(stack, gone_offset, end),
        )
        kill_retries, gone_retries = retried(kill_entries), retried(gone_entries)
        figures.record(
            "Faults",
            "kill -9 of a backend replica: failed GETs",
            kill_failed,
            note=f"{load_note(load)}; a failure here is a response cut mid-way (below)",
        )
        figures.record(
            "Faults",
            "kill -9 of a backend replica: back (running, /health answers) after",
            round(kill_back_s, 1),
            "s",
            f"restored by Docker's restart policy (RestartCount {restarts} -> {victim.attrs['RestartCount']},"
            f" same container); the monitor started {len(kill_runs)} scale run(s) meanwhile",
        )
        figures.record(
            "Faults",
            "replica stopped + replica removed: pool back to 3 serving after",
            round(gone_back_s, 1),
            "s",
            f"restored by the monitor's scale run(s) ({len(gone_runs)}; the pool was below min_replicas)",
        )
        figures.record(
            "Faults", "replica stopped + replica removed: failed GETs", load.tally.failed - kill_failed
        )
        figures.record(
            "Faults",
            "both: GETs whose response the SIGKILL cut after nginx had passed its headers on (not retryable)",
            cut_responses(load),
        )
        figures.record("Faults", "kill -9: GETs nginx retried on another replica (access log)", kill_retries)
        figures.record("Faults", "stopped + removed: GETs nginx retried on another replica", gone_retries)
        # nginx retries a request on another replica until it has passed the first answer's headers on: a
        # response the SIGKILL cut after that is lost. Nothing else fails, and at most the requests in flight
        # on the three replicas killed (kill -9, docker kill, docker rm -f: each a SIGKILL) are cut.
        failed = [
            {k: e.get(k) for k in ("msec", "status", "upstream_addr", "upstream_status", "request_time")}
            for e in kill_entries + gone_entries
            if int(e.get("status", 0)) >= 500
        ]  # each try's address and status, in full: what a rare 502 here came from
        assert load.tally.failed == cut_responses(load), (dict(load.tally.failures), failed)
        assert cut_responses(load) <= 3 * len(load.workers), dict(load.tally.failures)
        assert gone_runs and all(r["trigger"] == "monitor" and r["result"] == "ok" for r in gone_runs), runs
        # The kill and the removal are two steps: the monitor's tick may fall between them, or Docker may not
        # show the killed replica exited yet. A decision made at 2 replicas then finds 1 and changes nothing
        # (it is stale); the next one brings the pool from below 3 to 3.
        ups = [p for r in gone_runs for p in r["pools"] if p["pool"] == "backend" and p["direction"] == "up"]
        assert ups and ups[0]["current"] in (1, 2) and ups[0]["target"] == 3, gone_runs
        assert gone_retries > 0  # the requests sent to the lost replicas went to another one
    finally:
        monitor.stop()
        put_back(stack)


def load_note(load: Load) -> str:
    paths = sorted({path for worker in load.workers for path in worker.paths})
    return f"{load.tally.sent} GETs at {load.rate:.0f} req/s on {', '.join(paths)}"


def kill_tree(pid: int) -> int:
    """SIGKILL a process and everything below it, as systemd does to the rest of the monitor unit's cgroup
    (KillMode=mixed) once its main process is gone. Returns how many processes were killed."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)
    return len(procs)


@pytest.mark.long
def test_the_monitor_killed_in_the_middle_of_a_scale_up_leaves_no_orphan_and_keeps_the_cooldown(
    engine, stack, tmp_path, figures
):
    lock = SCALE_LOCK
    orphan = f"{stack.name}-backend-4"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    # First monitor: the pool's minimum is 4, so it scales 3 -> 4 at once.
    first = MonitorProcess(stack, tmp_path / "first", min_replicas=4)
    second = MonitorProcess(stack, tmp_path / "second", stabilization_window_s=4.0, cooldown_s=15.0)
    try:
        with Load(stack.https_port, API, rate=10, workers=2, sources=SOURCES, max_seconds=120) as load:
            before = events_count()
            first.start()

            def started_orphan() -> bool:
                containers = [c for c in stack_containers(engine, stack.name) if c.name == orphan]
                return bool(containers) and containers[0].status == "running"

            assert wait_for(started_orphan, timeout=60, step=0.1), first.log()[-3000:]
            state = json.loads((tmp_path / "first" / "state.json").read_text())
            killed = kill_tree(first.proc.pid)
            first.proc.wait(timeout=10)
            killed_at = time.time()
            # What the killed run left: its lock, a replica the LB does not know, and no scale event.
            assert lock.exists() and json.loads(lock.read_text())["run"].startswith("scale.yml")
            assert not in_lb(stack, backend_port(stack, 4))
            assert events_since(before) == []
            assert state["scale_run_in_progress"] is True  # all the monitor knew of the run

            second.start()  # the pool's minimum back at 3
            assert wait_for(lambda: in_lb(stack, backend_port(stack, 4)), timeout=60), second.log()[-3000:]
            readmitted_s = time.time() - killed_at
            assert wait_for(lambda: events_since(before), timeout=30)
            repair = events_since(before)[0]
            assert not lock.exists()
            assert wait_for(lambda: backend_replicas(engine, stack) == 3, timeout=90), second.log()[-3000:]
        runs = events_since(before)
        downs = [at for at, d in second.decisions() if d["action"] == "down"]
        repaired_at = epoch(repair["end"])
        figures.record(
            "Faults",
            "monitor + its scale run killed mid scale-up: orphan replica added to the LB after",
            round(readmitted_s, 1),
            "s",
            f"{killed} processes killed; the restarted monitor's scale run at the current count took the lock"
            " over and added the running replica to the LB",
        )
        figures.record(
            "Faults",
            "monitor killed mid scale-up: first scale-down after the recovering run",
            round(min(downs) - repaired_at, 1),
            "s",
            "cooldown 15 s: the run that recovered the lock counts as a scale event",
        )
        figures.record(
            "Faults", "monitor killed mid scale-up: failed GETs", load.tally.failed, note=load_note(load)
        )
        assert load.tally.failed == 0, dict(load.tally.failures)
        assert repair["trigger"] == "monitor" and repair["result"] == "ok", repair
        assert repair["recovered_from"]["run"].startswith("scale.yml"), repair
        assert min(downs) - repaired_at >= 15 - 1.5, "scaled down inside the cooldown of the recovering run"
        assert [r["result"] for r in runs] == ["ok"] * len(runs), runs
        assert running_backends(engine, stack) == [f"{stack.name}-backend-{i}" for i in (1, 2, 3)]
        assert not in_lb(stack, backend_port(stack, 4))
    finally:
        if first.proc and first.proc.poll() is None:
            kill_tree(first.proc.pid)
        second.stop()  # lets a scale run in progress finish
        put_back(stack)


class Relay:
    """A relay on 127.0.0.1 to the LB's status server that the test can cut: while cut, every request gets a
    503, as from an LB whose status server is unreachable or in trouble."""

    def __init__(self, target_port: int) -> None:
        self.cut = False
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = 503, b"cut by the test"
                if not relay.cut:
                    url = f"http://127.0.0.1:{target_port}{self.path}"
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        status, body = answer.status, answer.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.long
def test_without_the_lbs_status_the_monitor_never_scales_down_and_says_so(engine, stack, tmp_path, figures):
    assert playbook("scale.yml", "-e", "pool=backend", "-e", "replicas=4").rc == 0
    relay = Relay(stack.status_port)
    relay.cut = True  # the monitor starts while the LB's status (members and counters) cannot be had
    settings = {"lb_status_url": f"{relay.url}/status", "stub_status_url": f"{relay.url}/nginx_status"}
    monitor = MonitorProcess(stack, tmp_path, settings=settings, stabilization_window_s=3.0, cooldown_s=1.0)
    try:
        # Frontend traffic only: the backend at 4 is idle, and with its metrics the monitor would scale it
        # down.
        with Load(stack.https_port, ["/whoami"], rate=10, workers=2, sources=SOURCES, max_seconds=90) as load:
            monitor.start()
            time.sleep(15)
            held = [d for _, d in monitor.decisions() if d["pool"] == "backend"]
            assert held and all(d["action"] == "hold" for d in held), held
            assert backend_replicas(engine, stack) == 4
            assert "LB counters unreachable: traffic unknown" in monitor.log(), monitor.log()[-2000:]
            assert f"LB status {relay.url}/status unreachable" in monitor.log(), monitor.log()[-2000:]
            relay.cut = False  # the source is back
            back_at = time.time()
            assert wait_for(lambda: backend_replicas(engine, stack) == 3, timeout=60), monitor.log()[-3000:]
        downs = [at for at, d in monitor.decisions() if d["pool"] == "backend" and d["action"] == "down"]
        figures.record(
            "Faults",
            "LB status unreachable: scale-downs of an idle pool above its minimum",
            sum(1 for d in held if d["action"] == "down"),
            note=f"{len(held)} decisions in 15 s; warned 'LB counters unreachable'",
        )
        figures.record(
            "Faults",
            "LB status back: scale-down decided after",
            round(min(downs) - back_at, 1),
            "s",
            "stabilization window 3 s of fresh metrics",
        )
        figures.record(
            "Faults", "LB status unreachable: failed GETs", load.tally.failed, note=load_note(load)
        )
        assert load.tally.failed == 0, dict(load.tally.failures)
    finally:
        monitor.stop()
        relay.close()
        put_back(stack)
