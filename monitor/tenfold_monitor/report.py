# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The daily performance report: a day of the monitor's metrics log summed up as text and a PNG plot.

    python -m tenfold_monitor report [--date YYYY-MM-DD] [--metrics logs/performance-metrics.jsonl]
                                     [--out logs/reports]

writes `<out>/performance-<date>.txt` and `.png` for the UTC day `--date` (default: yesterday) and prints the
text. The metrics log is one JSON line per collection (`Snapshot.to_json()` plus the policy's `decisions`),
rotated to `.1`, `.2`, ...; the report reads the backups too.

`build` is pure (lines in, `Report` out). Per pool it gives requests/s (mean and peak), p95 (median and
worst), the error rate (mean weighted by requests, and worst), replicas (min and max), and how often the pool
was scaled up and down, counted from the changes of `replicas` between samples: a scale run adds or removes
its containers one after the other, so changes in the same direction less than `merge_s` apart count as one.
Figures a sample does not have (None: the source was unavailable) are left out, never read as 0. A line
that is not a metrics record is skipped and counted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

# Samples further apart than this are a gap (the monitor was not running): time not covered.
GAP_S = 60.0
# Changes of replicas in the same direction less than this apart are one scale run.
MERGE_S = 10.0
# Scale changes listed by name in the text; the rest are counted.
LISTED_CHANGES = 12
DEFAULT_METRICS = Path("logs/performance-metrics.jsonl")
DEFAULT_OUT = Path("logs/reports")


# --- records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolPoint:
    """One pool in one sample: the figures the report uses (None: unknown in that sample)."""

    rps: float | None
    p95_s: float | None
    error_rate: float | None
    requests: float | None
    replicas: int | None
    action: str | None  # the policy's decision for the pool in that sample: up, down, hold
    rejected: float | None = None  # requests the LB turned away itself in the sample's window


@dataclass(frozen=True)
class Sample:
    at: float
    stack: str
    pools: dict[str, PoolPoint]


@dataclass(frozen=True)
class Change:
    """A scale-up or -down seen in the samples: replicas went from `before` to `after`, starting at `at`."""

    at: float
    before: int
    after: int


@dataclass(frozen=True)
class PoolReport:
    pool: str
    samples: int
    rps_mean: float | None
    rps_peak: float | None
    rps_peak_at: float | None
    p95_median_s: float | None
    p95_worst_s: float | None
    p95_worst_at: float | None
    error_rate_mean: float | None  # failed requests / requests, over the samples that counted requests
    error_rate_worst: float | None
    error_rate_worst_at: float | None
    rejected_peak: float | None  # most requests the LB turned away in one window (the attack signal)
    rejected_peak_at: float | None
    replicas_min: int | None
    replicas_max: int | None
    changes: tuple[Change, ...] = ()
    up_decisions: int = 0  # runs of consecutive "up" decisions (acted on or not: dry run, busy)
    down_decisions: int = 0

    @property
    def scale_ups(self) -> int:
        return sum(1 for c in self.changes if c.after > c.before)

    @property
    def scale_downs(self) -> int:
        return sum(1 for c in self.changes if c.after < c.before)


@dataclass(frozen=True)
class Report:
    since: float
    until: float
    samples: int
    first_at: float | None
    last_at: float | None
    covered_s: float  # time between samples, leaving out gaps longer than gap_s
    gaps: tuple[tuple[float, float], ...]  # (start, seconds) of each gap longer than gap_s
    malformed: int
    stacks: tuple[str, ...] = ()
    pools: dict[str, PoolReport] = field(default_factory=dict)
    gap_s: float = GAP_S

    @property
    def coverage(self) -> float:
        """Share of the period the samples cover (0..1)."""
        return self.covered_s / (self.until - self.since) if self.until > self.since else 0.0


# --- parsing --------------------------------------------------------------------------------------
def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_line(line: str) -> Sample | None:
    """A metrics line as a Sample; None when it is not one (not JSON, no time, no pools)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    at, pools = _number(record.get("at")), record.get("pools")
    if at is None or not isinstance(pools, dict):
        return None
    actions: dict[str, str] = {}
    decisions = record.get("decisions")
    for decision in decisions if isinstance(decisions, list) else []:
        if isinstance(decision, dict) and isinstance(decision.get("pool"), str):
            actions[decision["pool"]] = str(decision.get("action"))
    points = {}
    for name, figures in pools.items():
        if not isinstance(figures, dict):
            return None
        points[str(name)] = PoolPoint(
            rps=_number(figures.get("rps")),
            p95_s=_number(figures.get("p95_s")),
            error_rate=_number(figures.get("error_rate")),
            requests=_number(figures.get("requests")),
            replicas=_count(figures.get("replicas")),
            action=actions.get(name),
            rejected=_number(figures.get("rejected")),
        )
    return Sample(at=at, stack=str(record.get("stack", "")), pools=points)


def samples_in(lines: Iterable[str], since: float, until: float) -> tuple[list[Sample], int]:
    """(the samples in [since, until), oldest first, each time once; malformed lines of that period).

    A malformed line has no time of its own: it belongs to the period of the sample before it in the input
    (of the one after it when it comes first).
    """
    samples: dict[tuple[float, str], Sample] = {}
    malformed = 0
    pending = 0  # malformed lines before the first good one
    previous_in: bool | None = None
    for line in lines:
        if not line.strip():
            continue
        sample = parse_line(line)
        if sample is None:
            if previous_in is None:
                pending += 1
            elif previous_in:
                malformed += 1
            continue
        inside = since <= sample.at < until
        if previous_in is None and inside:
            malformed += pending
        previous_in = inside
        if inside:
            samples[(sample.at, sample.stack)] = sample
    return sorted(samples.values(), key=lambda s: s.at), malformed


# --- the figures ----------------------------------------------------------------------------------
def _peak(points: Sequence[tuple[float, float]]) -> tuple[float | None, float | None]:
    if not points:
        return None, None
    at, value = max(points, key=lambda p: p[1])
    return value, at


def scale_changes(series: Sequence[tuple[float, int]], merge_s: float = MERGE_S) -> list[Change]:
    """Changes of replicas in (time, replicas) samples; same-direction changes < merge_s apart are one."""
    changes: list[Change] = []
    last_step_at: float | None = None
    for (_, before), (at, after) in itertools.pairwise(series):
        if after == before:
            continue
        if changes and last_step_at is not None and at - last_step_at < merge_s:
            current = changes[-1]
            if (after > before) == (current.after > current.before):
                changes[-1] = Change(current.at, current.before, after)
                last_step_at = at
                continue
        changes.append(Change(at, before, after))
        last_step_at = at
    return changes


def _decision_runs(actions: Sequence[str | None], action: str) -> int:
    return sum(1 for i, a in enumerate(actions) if a == action and (i == 0 or actions[i - 1] != action))


def pool_report(name: str, samples: Sequence[Sample], merge_s: float = MERGE_S) -> PoolReport:
    points = [(s.at, s.pools[name]) for s in samples if name in s.pools]
    rps = [(at, p.rps) for at, p in points if p.rps is not None]
    p95 = [(at, p.p95_s) for at, p in points if p.p95_s is not None]
    errors = [(at, p.error_rate) for at, p in points if p.error_rate is not None]
    weighted = [(p.error_rate, p.requests) for _, p in points if p.error_rate is not None and p.requests]
    requests = sum(r for _, r in weighted)
    if requests > 0:
        error_mean: float | None = sum(e * r for e, r in weighted) / requests
    else:
        error_mean = 0.0 if errors else None  # no request counted: nothing failed
    replicas = [(at, p.replicas) for at, p in points if p.replicas is not None]
    rps_peak, rps_peak_at = _peak(rps)
    p95_worst, p95_worst_at = _peak(p95)
    error_worst, error_worst_at = _peak(errors)
    rejected_peak, rejected_peak_at = _peak([(at, p.rejected) for at, p in points if p.rejected is not None])
    actions = [p.action for _, p in points]
    return PoolReport(
        pool=name,
        samples=len(points),
        rps_mean=statistics.fmean(v for _, v in rps) if rps else None,
        rps_peak=rps_peak,
        rps_peak_at=rps_peak_at,
        p95_median_s=statistics.median(v for _, v in p95) if p95 else None,
        p95_worst_s=p95_worst,
        p95_worst_at=p95_worst_at,
        error_rate_mean=error_mean,
        error_rate_worst=error_worst,
        error_rate_worst_at=error_worst_at,
        rejected_peak=rejected_peak,
        rejected_peak_at=rejected_peak_at,
        replicas_min=min(r for _, r in replicas) if replicas else None,
        replicas_max=max(r for _, r in replicas) if replicas else None,
        changes=tuple(scale_changes(replicas, merge_s)),
        up_decisions=_decision_runs(actions, "up"),
        down_decisions=_decision_runs(actions, "down"),
    )


def pool_names(samples: Iterable[Sample]) -> list[str]:
    """Pools in the order they first appear."""
    names: dict[str, None] = {}
    for sample in samples:
        names.update(dict.fromkeys(sample.pools))
    return list(names)


def build(
    lines: Iterable[str], since: float, until: float, *, gap_s: float = GAP_S, merge_s: float = MERGE_S
) -> Report:
    """The report of the metrics lines in [since, until) (epoch seconds). Pure."""
    samples, malformed = samples_in(lines, since, until)
    covered, gaps = 0.0, []
    for previous, sample in itertools.pairwise(samples):
        step = sample.at - previous.at
        if step > gap_s:
            gaps.append((previous.at, step))
        else:
            covered += step
    return Report(
        since=since,
        until=until,
        samples=len(samples),
        first_at=samples[0].at if samples else None,
        last_at=samples[-1].at if samples else None,
        covered_s=covered,
        gaps=tuple(gaps),
        malformed=malformed,
        stacks=tuple(dict.fromkeys(s.stack for s in samples)),
        pools={name: pool_report(name, samples, merge_s) for name in pool_names(samples)},
        gap_s=gap_s,
    )


# --- text -----------------------------------------------------------------------------------------
def _time(at: float | None, with_date: bool = False) -> str:
    if at is None:
        return "-"
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _fmt(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{unit}"


def render_text(report: Report) -> str:
    """The report as plain text, one block per pool."""
    day = datetime.fromtimestamp(report.since, UTC)
    stacks = ", ".join(report.stacks) or "-"
    out = [
        f"tenfold performance report, {day:%Y-%m-%d} (UTC), stack {stacks}",
        "",
        f"period    {_time(report.since, True)} - {_time(report.until, True)} UTC",
    ]
    if not report.samples:
        out.append("samples   none: the metrics log has no line for this period")
    else:
        out.append(
            f"samples   {report.samples}, {_time(report.first_at, True)} - {_time(report.last_at, True)};"
            f" covered {_duration(report.covered_s)} ({report.coverage:.1%} of the period)"
        )
        if report.gaps:
            start, longest = max(report.gaps, key=lambda g: g[1])
            out.append(
                f"gaps      {len(report.gaps)} longer than {report.gap_s:.0f} s (no sample); the longest"
                f" {_duration(longest)} from {_time(start)}"
            )
    out.append(f"skipped   {report.malformed} malformed line(s)")
    for pool in report.pools.values():
        out += ["", f"{pool.pool} ({pool.samples} samples)"]
        out.append(
            f"  requests/s  mean {_fmt(pool.rps_mean)}   peak {_fmt(pool.rps_peak)}"
            f" at {_time(pool.rps_peak_at)}"
        )
        out.append(
            f"  p95         median {_fmt(pool.p95_median_s, ' ms', 1000, 0)}"
            f"   worst {_fmt(pool.p95_worst_s, ' ms', 1000, 0)} at {_time(pool.p95_worst_at)}"
        )
        out.append(
            f"  errors      mean {_fmt(pool.error_rate_mean, ' %', 100)}"
            f"   worst {_fmt(pool.error_rate_worst, ' %', 100)} at {_time(pool.error_rate_worst_at)}"
        )
        out.append(
            f"  rejected    peak {_fmt(pool.rejected_peak, digits=0)} per window"
            f" at {_time(pool.rejected_peak_at)} (turned away by the LB: no demand)"
        )
        out.append(
            f"  replicas    min {pool.replicas_min if pool.replicas_min is not None else '-'}"
            f"   max {pool.replicas_max if pool.replicas_max is not None else '-'}"
        )
        out.append(
            f"  scaling     {pool.scale_ups} up, {pool.scale_downs} down"
            f" (monitor decisions: {pool.up_decisions} up, {pool.down_decisions} down)"
        )
        for change in pool.changes[:LISTED_CHANGES]:
            out.append(f"              {_time(change.at)}  {change.before} -> {change.after}")
        if len(pool.changes) > LISTED_CHANGES:
            out.append(f"              ... and {len(pool.changes) - LISTED_CHANGES} more")
    return "\n".join(out) + "\n"


# --- the plot -------------------------------------------------------------------------------------
def _series(samples: Sequence[Sample], pool: str, attr: str, gap_s: float) -> tuple[list, list[float]]:
    """(times, values) of one figure; NaN where it is unknown and across gaps, so no line bridges them."""
    times: list[datetime] = []
    values: list[float] = []
    previous: float | None = None
    for sample in samples:
        point = sample.pools.get(pool)
        if previous is not None and sample.at - previous > gap_s:
            times.append(datetime.fromtimestamp(previous + gap_s / 2, UTC))
            values.append(math.nan)
        previous = sample.at
        value = None if point is None else getattr(point, attr)
        times.append(datetime.fromtimestamp(sample.at, UTC))
        values.append(math.nan if value is None else float(value))
    return times, values


def plot(
    lines: Iterable[str],
    path: Path | str,
    *,
    since: float = -math.inf,
    until: float = math.inf,
    title: str = "",
    gap_s: float = GAP_S,
) -> Path:
    """A PNG of request rate, p95, error rate and replicas per pool over time (4 panels, one time axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    samples, _ = samples_in(lines, since, until)
    panels = (
        ("rps", "requests/s", 1.0, "default"),
        ("p95_s", "p95 (ms)", 1000.0, "default"),
        ("error_rate", "errors (%)", 100.0, "default"),
        ("replicas", "replicas", 1.0, "steps-post"),
    )
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(12, 10), dpi=100)
    try:
        for ax, (attr, label, scale, style) in zip(axes, panels, strict=True):
            for pool in pool_names(samples):
                times, values = _series(samples, pool, attr, gap_s)
                ax.plot(times, [v * scale for v in values], label=pool, drawstyle=style, linewidth=1.2)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
        if samples:
            axes[0].legend(loc="upper right")
        else:
            axes[0].text(0.5, 0.5, "no samples in this period", ha="center", transform=axes[0].transAxes)
        axes[-1].yaxis.get_major_locator().set_params(integer=True)
        axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
        axes[-1].set_xlabel("time (UTC)")
        if math.isfinite(since) and math.isfinite(until):
            axes[-1].set_xlim(datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC))
        fig.suptitle(title or "tenfold performance")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


# --- files and the command ------------------------------------------------------------------------
def metrics_files(metrics: Path, since: float = -math.inf) -> list[Path]:
    """The metrics log and its rotated backups, oldest first, leaving out those last written before since."""
    backups = []
    for candidate in metrics.parent.glob(f"{metrics.name}.*"):
        suffix = candidate.name[len(metrics.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), candidate))
    files = [p for _, p in sorted(backups, reverse=True)] + [metrics]
    found = []
    for path in files:
        try:
            if path.stat().st_mtime >= since:
                found.append(path)
        except OSError:  # rotated away or never written
            continue
    return found


def read_lines(metrics: Path, since: float = -math.inf) -> Iterator[str]:
    for path in metrics_files(metrics, since):
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                yield from handle
        except OSError:
            continue


def day_bounds(day: date) -> tuple[float, float]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def write(day: date, metrics: Path, out: Path) -> tuple[str, Path, Path]:
    """Write the report of `day` (UTC) into out/; (its text, the text file, the PNG)."""
    since, until = day_bounds(day)
    lines = list(read_lines(metrics, since))
    report = build(lines, since, until)
    text = render_text(report)
    out.mkdir(parents=True, exist_ok=True)
    text_path = out / f"performance-{day.isoformat()}.txt"
    png_path = out / f"performance-{day.isoformat()}.png"
    tmp = text_path.with_suffix(".txt.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(text_path)
    stacks = ", ".join(report.stacks)
    title = f"tenfold{', stack ' + stacks if stacks else ''}: {day.isoformat()} (UTC)"
    plot(lines, png_path, since=since, until=until, title=title)
    return text, text_path, png_path


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    parser = argparse.ArgumentParser(
        prog="tenfold_monitor report", description="Write the daily performance report of one UTC day."
    )
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=yesterday,
        help=f"the UTC day, YYYY-MM-DD (default: yesterday, {yesterday})",
    )
    parser.add_argument("--metrics", type=Path, default=DEFAULT_METRICS, help="the monitor's metrics log")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory of the reports")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if not metrics_files(args.metrics):
        print(f"tenfold_monitor report: no metrics log at {args.metrics}", file=sys.stderr)
        return 1
    try:
        text, text_path, png_path = write(args.date, args.metrics, args.out)
    except OSError as exc:
        print(f"tenfold_monitor report: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    print(f"written: {text_path} {png_path}", file=sys.stderr)
    return 0
