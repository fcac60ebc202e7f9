"""The daily performance report: a day of metrics lines (and their rotated backups) as figures, text, PNG."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import policy
from tenfold_monitor import report
from tenfold_monitor.__main__ import main as monitor_main
from tenfold_monitor.collect import PoolSnapshot, Snapshot
from tenfold_monitor.service import Monitor, Settings

DAY = date(2026, 11, 26)
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()  # the scenario's first sample
STEP = 2.0  # seconds between samples
SAMPLES = range(300)  # 10:00:00 .. 10:09:58
SPIKE = range(90, 150)  # 10:03:00 .. 10:04:58: backend at 110 req/s
PEAK, WORST_P95, WORST_ERRORS = 100, 101, 102
GAP = range(200, 230)  # 10:06:40 .. 10:07:38: no sample (the monitor was down)
FRONTEND_UNKNOWN = 150  # Docker and the access log unavailable for the frontend
WINDOW_S = 5.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def backend_replicas(i: int) -> int:
    """3; a scale run adds 2 over two samples (10:03:10, 10:03:12); one removes 2 over two samples
    (10:08:00, 10:08:02); then two scale-ups of 1, 20 s apart (10:09:00, 10:09:20)."""
    if i < 95:
        return 3
    if i == 95:
        return 4
    if i < 240:
        return 5
    if i == 240:
        return 4
    if i < 270:
        return 3
    return 4 if i < 280 else 5


def backend_action(i: int) -> str:
    if 92 <= i <= 95 or i in (269, 279):
        return "up"
    return "down" if i == 239 else "hold"


def pool(name: str, **figures) -> PoolSnapshot:
    values = {
        "pool": name,
        "replicas": 3,
        "serving": 3,
        "starting": 0,
        "lb_members": 3,
        "inflight": 0,
        "cpu_percent": 10.0,
        "memory_percent": 5.0,
        "requests": None,
        "rps": None,
        "error_rate": None,
        "p50_s": None,
        "p95_s": None,
        "p99_s": None,
        **figures,
    }
    return PoolSnapshot(**values)


def traffic(rps: float, p95: float, errors: float) -> dict:
    return {
        "rps": rps,
        "requests": round(rps * WINDOW_S),
        "error_rate": errors,
        "p50_s": p95 / 2,
        "p95_s": p95,
    }


def metrics_line(at: float, backend: PoolSnapshot, frontend: PoolSnapshot, action: str = "hold") -> str:
    """A line as the monitor writes it: Snapshot.to_json() plus the policy's decisions."""
    snapshot = Snapshot(
        at=at,
        stack="tenfold",
        host_cpu_percent=20.0,
        host_memory_percent=10.0,
        lb_active_connections=3,
        lb_request_rate=12.0,
        traffic_state="ok",
        window_s=WINDOW_S,
        pools={"frontend": frontend, "backend": backend},
    )
    line = json.loads(snapshot.to_json())
    decisions = [
        policy.Decision("frontend", 3, 3, "hold", "steady"),
        policy.Decision("backend", backend.replicas or 3, backend.replicas or 3, action, "scenario"),
    ]
    line["decisions"] = [d.as_dict() for d in decisions]
    return json.dumps(line, sort_keys=True)


def scenario_line(i: int) -> str:
    rps, p95, errors = 10.0, 0.05, 0.0
    if i in SPIKE:
        rps, p95, errors = 110.0, 0.4, 0.02
    if i == PEAK:
        rps = 130.0
    if i == WORST_P95:
        p95 = 0.9
    if i == WORST_ERRORS:
        errors = 0.1
    backend = pool(
        "backend", replicas=backend_replicas(i), serving=backend_replicas(i), **traffic(rps, p95, errors)
    )
    frontend = pool("frontend", **traffic(5.0, 0.02, 0.0))
    if i == FRONTEND_UNKNOWN:
        frontend = replace(
            frontend, replicas=None, serving=None, starting=None, rps=None, requests=None, error_rate=None
        )
    return metrics_line(T0 + i * STEP, backend, frontend, backend_action(i))


def quiet_line(at: float) -> str:
    """A line outside the scenario: a huge backend rate that must never count for DAY."""
    return metrics_line(at, pool("backend", replicas=9, **traffic(999.0, 9.0, 0.9)), pool("frontend"))


DAY_START, DAY_END = report.day_bounds(DAY)
BEFORE = [quiet_line(DAY_START - 6), quiet_line(DAY_START - 4), quiet_line(DAY_START - 2)]
AFTER = quiet_line(DAY_END + 1)
IN_DAY = [i for i in SAMPLES if i not in GAP]


def write_metrics(directory: Path) -> Path:
    """The scenario as the monitor leaves it: an old backup (.2), a backup (.1), the current log."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics = directory / "performance-metrics.jsonl"
    old = directory / "performance-metrics.jsonl.2"  # last written the day before: not read
    old.write_text("\n".join([quiet_line(DAY_START - 3600), "{truncated", *BEFORE[:1]]) + "\n")
    os.utime(old, (DAY_START - 1, DAY_START - 1))
    first = [scenario_line(i) for i in IN_DAY if i < 150]
    (directory / "performance-metrics.jsonl.1").write_text(
        "\n".join([*BEFORE[1:], "not json at all", *first]) + "\n"  # that malformed line is the day before's
    )
    rest = [scenario_line(i) for i in IN_DAY if i >= 150]
    rest.insert(30, '{"at": 1795780000.0, "pools": {"backend"')  # cut off mid-line
    rest.insert(60, "[1, 2, 3]")  # JSON, but not a record
    metrics.write_text("\n".join([*rest, AFTER]) + "\n")
    return metrics


@pytest.fixture
def metrics(tmp_path: Path) -> Path:
    return write_metrics(tmp_path / "logs")


@pytest.fixture
def day_report(metrics: Path) -> report.Report:
    return report.build(report.read_lines(metrics, DAY_START), DAY_START, DAY_END)


def at(i: int) -> float:
    return T0 + i * STEP


# --- the figures -----------------------------------------------------------------------------------
def test_the_day_is_read_from_the_log_and_its_backups_oldest_first_skipping_backups_of_earlier_days(metrics):
    files = report.metrics_files(metrics, DAY_START)
    assert [p.name for p in files] == ["performance-metrics.jsonl.1", "performance-metrics.jsonl"]


def test_requests_per_second_mean_and_peak_per_pool(day_report):
    backend, frontend = day_report.pools["backend"], day_report.pools["frontend"]
    normal = len(IN_DAY) - len(SPIKE)
    assert backend.samples == len(IN_DAY) == 270
    assert backend.rps_mean == pytest.approx((normal * 10 + 59 * 110 + 130) / 270)
    assert (backend.rps_peak, backend.rps_peak_at) == (130.0, at(PEAK))
    assert (frontend.rps_mean, frontend.rps_peak) == (5.0, 5.0)


def test_p95_median_and_worst(day_report):
    backend = day_report.pools["backend"]
    assert backend.p95_median_s == 0.05  # 210 of the 270 samples are quiet
    assert (backend.p95_worst_s, backend.p95_worst_at) == (0.9, at(WORST_P95))


def test_the_mean_error_rate_is_weighted_by_requests_and_the_worst_sample_is_named(day_report):
    backend = day_report.pools["backend"]
    failed = 58 * 0.02 * 550 + 0.02 * 650 + 0.1 * 550  # spike samples; the peak; the worst
    requests = 210 * 50 + 59 * 550 + 650
    assert backend.error_rate_mean == pytest.approx(failed / requests)
    assert (backend.error_rate_worst, backend.error_rate_worst_at) == (0.1, at(WORST_ERRORS))
    assert day_report.pools["frontend"].error_rate_mean == 0.0


def test_replicas_and_scale_runs_are_counted_from_the_changes_of_replicas(day_report):
    backend = day_report.pools["backend"]
    assert (backend.replicas_min, backend.replicas_max) == (3, 5)
    assert [(c.at, c.before, c.after) for c in backend.changes] == [
        (at(95), 3, 5),  # two containers in consecutive samples: one scale run
        (at(240), 5, 3),
        (at(270), 3, 4),  # 20 s apart: two scale runs
        (at(280), 4, 5),
    ]
    assert (backend.scale_ups, backend.scale_downs) == (3, 1)
    assert (backend.up_decisions, backend.down_decisions) == (3, 1)
    frontend = day_report.pools["frontend"]
    assert (frontend.scale_ups, frontend.scale_downs, frontend.changes) == (0, 0, ())


def test_unknown_figures_are_left_out_never_read_as_zero(day_report):
    frontend = day_report.pools["frontend"]
    assert (frontend.replicas_min, frontend.rps_mean) == (3, 5.0)  # the sample with None changes neither
    assert frontend.changes == ()  # 3 -> unknown -> 3 is no scale run


def test_time_covered_leaves_out_gaps_and_names_them(day_report):
    assert (day_report.first_at, day_report.last_at) == (at(0), at(299))
    gap = at(GAP.stop) - at(GAP.start - 1)
    assert day_report.gaps == ((at(GAP.start - 1), gap),)
    assert day_report.covered_s == pytest.approx(299 * STEP - gap)
    assert day_report.coverage == pytest.approx((299 * STEP - gap) / 86400)


def test_malformed_lines_of_the_day_are_skipped_and_counted_those_of_other_days_are_not(day_report):
    assert day_report.malformed == 2
    assert day_report.samples == 270
    assert day_report.stacks == ("tenfold",)


def test_lines_outside_the_period_change_nothing():
    lines = [*BEFORE, *(scenario_line(i) for i in IN_DAY), AFTER]
    assert report.build(lines, DAY_START, DAY_END).pools["backend"].rps_peak == 130.0
    assert report.build(lines, DAY_END, DAY_END + 86400).pools["backend"].rps_peak == 999.0


def test_a_line_read_twice_counts_once():
    lines = [scenario_line(i) for i in range(10)]
    assert report.build(lines + lines[5:], DAY_START, DAY_END).samples == 10


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([(0, 3), (1, 4), (2, 5), (3, 5)], [(1, 3, 5)]),
        ([(0, 3), (1, 4), (5, 4), (8, 5)], [(1, 3, 5)]),  # a slow run: 7 s between its containers
        ([(0, 3), (1, 4), (30, 5)], [(1, 3, 4), (30, 4, 5)]),
        ([(0, 3), (1, 5), (2, 4)], [(1, 3, 5), (2, 5, 4)]),  # a reversal is a new change
        ([(0, 3)], []),
        ([], []),
    ],
)
def test_scale_changes_merge_one_runs_containers(series, expected):
    assert [(c.at, c.before, c.after) for c in report.scale_changes(series)] == expected


def test_a_day_without_samples_says_so():
    empty = report.build([], DAY_START, DAY_END)
    assert (empty.samples, empty.pools, empty.covered_s) == (0, {}, 0.0)
    assert "none: the metrics log has no line for this period" in report.render_text(empty)


# --- text and plot ---------------------------------------------------------------------------------
def test_the_text_names_each_pool_with_its_figures(day_report):
    text = report.render_text(day_report)
    assert "2026-11-26" in text and "stack tenfold" in text
    for name in ("backend", "frontend"):
        assert f"\n{name} (" in text
    assert "peak 130.00 at 10:03:20" in text
    assert "worst 900 ms at 10:03:22" in text
    assert "worst 10.00 % at 10:03:24" in text
    assert "min 3   max 5" in text
    assert "3 up, 1 down" in text
    assert "10:03:10  3 -> 5" in text
    assert "2 malformed line(s)" in text
    assert "1 longer than 60 s" in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_plot_is_a_png_of_the_day(metrics, tmp_path):
    lines = list(report.read_lines(metrics, DAY_START))
    path = report.plot(lines, tmp_path / "out" / "day.png", since=DAY_START, until=DAY_END, title="day")
    assert path.stat().st_size > 10_000
    assert png_size(path) == (1200, 1000)


def test_the_command_writes_the_text_and_the_png_and_prints_the_text(metrics, tmp_path, capsys):
    out = tmp_path / "reports"
    rc = monitor_main(["report", "--date", "2026-11-26", "--metrics", str(metrics), "--out", str(out)])
    assert rc == 0
    text = (out / "performance-2026-11-26.txt").read_text()
    assert capsys.readouterr().out == text
    assert "backend" in text and "frontend" in text
    png = out / "performance-2026-11-26.png"
    assert png.stat().st_size > 10_000 and png_size(png) == (1200, 1000)


def test_the_command_fails_clearly_without_a_metrics_log(tmp_path, capsys):
    rc = monitor_main(["report", "--metrics", str(tmp_path / "none.json"), "--out", str(tmp_path)])
    assert rc == 1
    assert "no metrics log at" in capsys.readouterr().err


# --- the monitor writes yesterday's report ---------------------------------------------------------
def monitor_for(tmp_path: Path, metrics: Path) -> Monitor:
    settings = Settings(
        stack="tenfold",
        project_dir=str(tmp_path),
        metrics_log=str(metrics),
        decisions_log=str(tmp_path / "decisions.jsonl"),
        scale_log=str(tmp_path / "scale-runs.log"),
        state_file=str(tmp_path / "state.json"),
        pools={"backend": {}},
    )
    monitor = Monitor(settings, collector=object())  # type: ignore[arg-type]
    monitor.report_day = DAY
    return monitor


def finish_report(monitor: Monitor, now: float) -> None:
    assert monitor.report_run is not None
    monitor.report_run[0].wait(timeout=120)
    monitor.daily_report(now)
    assert monitor.report_run is None


def test_the_monitor_writes_the_previous_days_report_once_the_utc_date_changes(tmp_path, caplog):
    logs = tmp_path / "logs"
    metrics = write_metrics(logs)
    monitor = monitor_for(tmp_path, metrics)
    caplog.set_level(logging.INFO, logger="tenfold.monitor")
    monitor.daily_report(DAY_END - 1)
    assert monitor.report_run is None  # still the same day
    monitor.daily_report(DAY_END + 2)
    finish_report(monitor, DAY_END + 3)
    text = (logs / "reports" / "performance-2026-11-26.txt").read_text()
    assert "backend" in text and (logs / "reports" / "performance-2026-11-26.png").stat().st_size > 10_000
    assert "performance report written:" in caplog.text
    monitor.daily_report(DAY_END + 60)
    assert monitor.report_run is None  # once a day


def test_a_failed_report_is_logged_and_the_monitor_goes_on(tmp_path, caplog):
    metrics = write_metrics(tmp_path / "logs")
    (tmp_path / "logs" / "reports").write_text("a file where the reports' directory should be")
    monitor = monitor_for(tmp_path, metrics)
    caplog.set_level(logging.INFO, logger="tenfold.monitor")
    monitor.daily_report(DAY_END + 2)
    finish_report(monitor, DAY_END + 3)
    assert "performance report failed (exit 1)" in caplog.text
    assert "File exists" in caplog.text


def test_the_report_runs_without_the_monitors_settings_from_the_command_line(metrics, tmp_path):
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "tenfold-monitor"),
            "report",
            "--date",
            "2026-11-26",
            "--metrics",
            str(metrics),
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tenfold performance report, 2026-11-26 (UTC), stack tenfold")


def test_the_rejected_peak_is_reported_apart_from_demand():
    lines = [
        Snapshot(
            at=T0 + i * STEP,
            stack="tenfold",
            host_cpu_percent=None,
            host_memory_percent=None,
            lb_active_connections=None,
            lb_request_rate=None,
            traffic_state="ok",
            window_s=WINDOW_S,
            pools={"backend": pool("backend", rps=2.0, requests=10, rejected=rejected)},
        ).to_json()
        for i, rejected in enumerate([0, 4000, 120])
    ]
    samples, malformed = report.samples_in(lines, T0 - 1, T0 + 60)
    backend = report.pool_report("backend", samples)
    assert malformed == 0
    assert (backend.rejected_peak, backend.rejected_peak_at) == (4000.0, T0 + STEP)
    assert backend.rps_peak == 2.0
