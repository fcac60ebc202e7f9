"""The benchmark harness's pure parts (scripts/benchkit), and each bench's figures rendered by the template.

The bench tests build a bench's figures from made-up measurements with the bench's own code, and render them
with the template that renders docs/benchmarks.md: a bench and its part of the template cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import bench_conn_bound
import bench_fleet
import bench_lb
import bench_load
import bench_monitor
import bench_scale
import bench_spike
import pytest
from benchkit import results, stats
from benchkit.host import BenchError
from benchkit.load import Load
from benchkit.stack import PortTaken, Stack, outside_allowlist, parse_sources
from test_load_eval import spike_doc

MACHINE = {"nproc": "4", "memory": "8.0 GiB", "nginx": "1.22.1", "locust": "2.47.0", "commit": "abc1234"}


def render(tmp_path: Path, name: str, figures: dict) -> str:
    """The doc rendered over one results file of `name` with `figures`, its whitespace collapsed."""
    record = {"script": f"scripts/bench_{name}.py", "command": "cmd", "written_at": "now", "machine": MACHINE}
    (tmp_path / f"{name}.json").write_text(json.dumps({**record, **figures}))
    return " ".join(results.render(tmp_path).split())


# --- the doc --------------------------------------------------------------------------------------
def test_the_doc_is_the_template_rendered_over_the_results_files():
    assert results.render() == results.DOC.read_text(), "run scripts/bench_docs.py"


def test_every_results_file_says_which_script_ran_how_and_on_what_machine():
    root = results.ROOT
    for path in results.RESULTS.glob("*.json"):
        doc = json.loads(path.read_text())
        assert (root / doc["script"]).exists() and doc["script"] in doc["command"], path
        assert {"nproc", "memory", "CPU", "kernel", "Docker server", "commit"} <= set(doc["machine"]), path


def test_the_cores_the_prose_names_are_the_measured_ones(tmp_path):
    figures = json.loads((results.RESULTS / "load.json").read_text())
    text = render(tmp_path, "load", {k: v for k, v in figures.items() if k != "machine"})
    assert "on the same 4 cores as nginx" in text and "2 cores" not in text


def test_the_filters_format_as_the_doc_does():
    assert results.number(None) == "-" and results.number(1.234) == "1.23" and results.number(2.5, 0) == "2"
    assert results.spread([1, 2.5, 4]) == "1.00 / 2.50 / 4.00" and results.spread(None) == "-"
    assert results.around([1.25, 2.0, 3.0]) == "2.0 (1.2-3.0)" and results.around(None) == "none"
    assert results.percent(0.671) == "67 %" and results.ms(0.0214) == "21" and results.ms(None) == "-"
    text = results.paragraph("word " * 40, indent=2)
    lines = text.splitlines()
    assert len(lines) == 2 and all(len(line) <= results.WRAP for line in lines) and lines[1].startswith("  w")
    env = results.environment()
    assert env.from_string("{{ a }} {{ b }}").render(a=2.0, b=0.5) == "2 0.5"


def test_median_and_spread_leave_out_what_was_not_measured():
    assert stats.median([3, None, 1, 2]) == 2 and stats.median([None]) is None
    assert stats.spread([3, None, 1, 2]) == [1, 2, 3] and stats.spread([]) is None


# --- the benches' figures -------------------------------------------------------------------------
def test_scale_figures_and_profile(tmp_path):
    recap = "TASKS RECAP ****\napp_pools : Reconcile ------------ 1.50s\nnginx_lb : Set members --- 0.25s\n"
    up = bench_scale.Measurement(3, 4, 4.0, 3.4, first_new_s=2.9, all_new_s=2.9, probes=200, machine_busy=0.5)
    down = bench_scale.Measurement(4, 3, 5.0, 4.4, last_leaving_s=2.7, probes=250, errors=["TimeoutError"])
    profiled = bench_scale.Measurement(3, 4, 5.4, 4.6, tasks=bench_scale.parse_profile(recap))
    assert profiled.tasks == [(1, "app_pools : Reconcile", 1.5), (2, "nginx_lb : Set members", 0.25)]
    args = argparse.Namespace(rounds=1, rate=50.0, quiet_below=25.0, quiet_wait=300.0)
    figures = bench_scale.figures([up, down], [profiled], [0.8], args)
    text = render(tmp_path, "scale", figures)
    assert (
        "| +1 (3->4) | 1 | 4.00 / 4.00 / 4.00 | 2.90 / 2.90 / 2.90 | 2.90 / 2.90 / 2.90 | 0 / 200 |" in text
    )
    assert "- -1 (4->3): 1 of 250 probe requests failed while the runs lasted (TimeoutError)" in text
    assert "| +1 wall time <= 3.5 x a no-op `ansible localhost -m ping` (0.80 s) | +1 (3->4) |" in text
    assert "by role: app_pools 1.50 s, nginx_lb 0.25 s." in text


def test_monitor_targets_and_figures(tmp_path):
    overhead = {
        "interval_s": 2.0,
        "cpu_percent": 0.95,
        "slices": [0.8, 0.9, 1.1],
        "rss_mb": [35.0, 35.1, 35.2],
    }
    overhead |= {"rss_mean": 35.1, "rss_peak": 35.2, "lines": 30, "expected_lines": 30, "period_s": 2.0}
    overhead |= {"written_s": [0.1, 0.1, 0.1], "engine_cpu_percent": 2.6, "busy": 0.1, "startup_cpu_s": 0.4}
    reaction = {"round": 1, "decision_s": 3.0, "tick_s": 2.0, "serving_s": 8.0, "desired": 4, "busy": None}
    reaction |= {"decision_to_serving_s": 5.0, "scale_start_s": None, "scale_end_s": None, "notes": []}
    reaction |= {"spike_sent": 800, "spike_failed": 0, "spike_rps": 104.2}
    targets = bench_monitor.targets([overhead], [reaction])
    assert [t["met"] for t in targets] == [True, True, True]
    assert not bench_monitor.targets([{**overhead, "period_s": 3.0}], [])[0]["met"]  # it collected too rarely
    figures = {"stack": "s", "https_port": 1, "frontend_port_base": 2, "backend_port_base": 3}
    figures |= {"light_rate": 20.0, "baseline_rate": 10.0, "probe_rate": 10.0, "spike_rate": 110.0}
    figures |= {"warmup_s": 12.0, "window_s": 60.0, "poll_s": 0.1, "spike_path": "/api/work?ms=50"}
    figures |= {"baseline": {"engine_cpu_percent": 1.5, "busy": 0.07}, "overheads": [overhead]}
    figures |= {"light": {"sent": 10, "failed": 0}, "reactions": [reaction], "targets": targets}
    figures["reaction_spread"] = {k: stats.spread([reaction[k]]) for k in bench_monitor.SPREAD}
    text = render(tmp_path, "monitor", figures)
    assert "| 2 s | 0.95 | 0.80 / 0.90 / 1.10 | 35.0 / 35.1 / 35.2 | 35.1 | 30 / 30 | 2.00 |" in text
    assert "| 1 | 3.00 | 2.00 | 8.00 | 5.00 | 4 | - / - | 104 | 0 / 800 | - |" in text


def test_load_spike_figures_from_a_recorded_spike(tmp_path):
    doc = {**spike_doc(), "pools_before": {"frontend": 3, "backend": 3}, "factor": 10, "sources": "a-b (2)"}
    event = {"trigger": "monitor", "duration_s": 6.2, "result": "ok"}
    event["pools"] = [{"pool": "backend", "current": 3, "target": 4}]
    doc |= {"generator_cpu_s": 3.0, "scale_events": [event]}
    spike = bench_load.spike_figures(doc)
    assert [p["name"] for p in spike["phases"]] == ["baseline", "spike", "after"]
    assert spike["scale_runs"] == ["backend 3->4 in 6 s (ok)"] and spike["slices"][0]["seconds"] == "0-20"
    row = {"users": 10, "rps": 1.0, "p99_s": None, "error_percent": 0.0, "busy": 0.99}
    direct = [
        {**row, "how": how, "p50_s": p50, "p95_s": p50 * 2} for how, p50 in (("direct", 0.002), ("LB", 0.003))
    ]
    assert bench_load.lb_added(direct) == [
        {"users": 10, "p50_s": pytest.approx(0.001), "p95_s": pytest.approx(0.002)}
    ]
    scenario = {
        "users": 10,
        "rps": 769.4,
        "p50_s": 0.021,
        "p95_s": 0.025,
        "p99_s": 0.028,
        "error_percent": 0.0,
    }
    figures = {"sources": "x", "criteria": {"min_rps": 100, "max_p95_s": 1, "max_error_percent": 5}}
    figures |= {
        "duration_s": 60,
        "direct_seconds": 20.0,
        "machine_full": True,
        "spike": spike,
        "direct": direct,
    }
    figures |= {"lb_added": bench_load.lb_added(direct)}
    figures["scenarios"] = [{**scenario, "pass": True, "cpu_per_request_ms": 0.42, "failed": []}]
    text = render(tmp_path, "load", {**figures})
    assert "| 10 | 769 | 21 | 25 | 28 | 0.00 | 0.42 | pass |" in text
    assert "(generator, nginx and the apps on 4 cores)" in text and "## The 10x spike" in text


def test_conn_bound_lb_fleet_and_spike_figures(tmp_path):
    runs = [
        bench_conn_bound.summary([0.00005, 0.00004, 0.00006], 1.0),
        bench_conn_bound.summary([0.00007], 1.0),
    ]
    modes = bench_conn_bound.modes({"bound": runs, "no bound": runs})
    assert modes["bound"]["p50_range"] == pytest.approx([50, 70])
    text = render(
        tmp_path,
        "conn-bound",
        {"connections": 3, "rounds": 2, "sources": {"count": 1, "range": "a-a"}, "modes": modes},
    )
    assert "| bound | 60 | 65 | 65 | 2 |" in text and "+0 µs" in text

    figure = {
        "direct": {"p50_s": 0.003, "failed": 0, "requests": 10},
        "lb": {"p50_s": 0.005, "failed": 1, "requests": 10},
    }
    figure["health"] = {"rps": 6000.0, "failed": 0, "requests": 100}
    got = bench_lb.figures([{"before": figure, "now": figure}])
    assert got["now"]["added_ms"] == pytest.approx(2.0) and [t["met"] for t in bench_lb.targets(got)] == [
        True,
        True,
    ]

    cut = {"lb_off_s": 3.9, "restored_s": 10.7, "requests": 400, "failed": 2, "failures": {"TimeoutError": 2}}
    fleet = bench_fleet.figures(
        [{"up1": {"wall_s": 6.0, "serving_s": 5.0}, "up7": {"wall_s": 9.0, "serving_s": 7.0}, "cut": cut}],
        0.874,
    )
    text = render(tmp_path, "fleet", fleet)
    assert (
        "| `scale.yml` backend 3 -> 4, wall | 6.00 (6.00-6.00) |" in text
        and "| 1 | 400 | 2 | TimeoutError 2 |" in text
        and "The machine's CPU was 87 % busy over the run" in text
    )

    run = {
        "failed": 0,
        "sent": 10,
        "first_new_serving_s": 2.5,
        "decided_s": 1.2,
        "members": [[0.5, 3], [3.0, 5]],
    }
    run["phases"] = {p: {"p50_s": 0.2, "p95_s": 0.4, "p99_s": 0.5} for p in ("baseline", "spike", "after")}
    runs = [{**run, "variant": v, "warm_rss_mib": 69.0} for v in bench_spike.VARIANTS]
    variants = bench_spike.variants(runs)
    assert variants[0]["first_serving_s"] == [2.5, 2.5, 2.5] and variants[0]["most_members"] == 5
    assert [t["met"] for t in bench_spike.targets(variants, 69.0)] == [True, True, False, False, True]


# --- load, stack ----------------------------------------------------------------------------------
def test_the_load_keeps_every_answer_and_when_each_instance_first_answered():
    load = Load(1, ["/api/whoami"], rate=10, workers=2, sources=["127.0.0.5"])  # never started: no request
    load.record("/api/whoami", "ok", b'{"instance": "s-backend-1"}')
    load.record("/api/whoami?x=1", "http 503", b"busy")
    load.record("/api/whoami", "ok", b'{"instance": "s-backend-2"}')
    assert [a.instance for a in load.since(0)] == ["s-backend-1", None, "s-backend-2"]
    assert list(load.first_seen()) == ["s-backend-1", "s-backend-2"]
    assert (load.tally.sent, load.tally.ok, load.tally.failed) == (3, 2, 1)
    assert load.tally.failures == {"/api/whoami: http 503": 1}


def test_keep_alive_workers_have_an_address_each_and_fresh_connections_share_them():
    sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    kept = Load(1, ["/"], rate=4, workers=4, sources=sources)
    assert [next(w.sources) for w in kept.workers] == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
    fresh = Load(1, ["/"], rate=4, workers=1, sources=sources, keepalive=False)
    assert [next(fresh.workers[0].sources) for _ in range(4)] == [*sources, sources[0]]


def test_a_benchs_own_stack_and_a_stack_from_a_vars_file(tmp_path):
    stack = Stack.own("tenfoldx", 48000, tmp_path / "w", nginx_lb_allowlist=["127.0.0.0/8"])
    assert (stack.url, stack.status_port, stack.port("backend", 2)) == (
        "https://127.0.0.1:48443",
        48081,
        48202,
    )
    assert json.loads(stack.vars_file.read_text())["tenfold_state_dir"] == str(tmp_path / "w")
    assert stack.ports(1) == [48080, 48443, 48081, 48101, 48201]
    assert stack.scale_command()[-2:] == ["-e", f"tenfold_state_dir={tmp_path / 'w'}"]
    vars_file = tmp_path / "stack.yml"
    vars_file.write_text(
        "tenfold_stack: it\nnginx_lb_https_port: 28443\nnginx_lb_allowlist: [127.0.3.0/24]\n"
    )
    other = Stack.from_file(vars_file, tmp_path)
    assert (other.name, other.url, other.allowlist) == ("it", "https://127.0.0.1:28443", ["127.0.3.0/24"])
    vars_file.write_text("nginx_lb_listen_address: 10.1.2.3\n")
    with pytest.raises(BenchError, match="only targets loopback"):
        Stack.from_file(vars_file, tmp_path)


def test_a_scale_run_is_a_bounded_logged_playbook_run_that_names_a_port_taken(tmp_path, monkeypatch):
    stack = Stack.own("tenfoldx", 48000, tmp_path)
    ran = []

    def run_logged(cmd, log, timeout, **popen):
        ran.append((cmd, timeout, popen["env"]["EXTRA"]))
        log.write_text("Error: address already in use\n")
        return 2

    monkeypatch.setattr("benchkit.stack.run_logged", run_logged)
    with pytest.raises(PortTaken, match="exited 2"):
        stack.scale("backend", 4, "-e", "trigger=bench", timeout=60, env=stack.env(EXTRA="1"))
    cmd, timeout, extra = ran[0]
    assert cmd[1:] == [
        "scale.yml",
        "-e",
        f"@{stack.vars_file}",
        "-e",
        "pool=backend",
        "-e",
        "replicas=4",
        "-e",
        "trigger=bench",
    ]
    assert (timeout, extra) == (60, "1") and (tmp_path / "001-scale.log").exists()


def test_load_sources_are_loopback_ranges_and_the_allowlist_exempts_some():
    assert parse_sources("127.0.3.1-127.0.3.3,127.0.0.9") == [
        "127.0.3.1",
        "127.0.3.2",
        "127.0.3.3",
        "127.0.0.9",
    ]
    for bad in ("10.0.0.1", "127.0.0.9-127.0.0.1", "x"):
        with pytest.raises(BenchError):
            parse_sources(bad)
    assert outside_allowlist(["127.0.3.1", "127.0.5.1"], ["127.0.3.0/24", "lan"]) == ["127.0.5.1"]
