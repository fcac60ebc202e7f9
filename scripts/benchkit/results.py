# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""A bench's results as JSON, and docs/benchmarks.md rendered from them.

Each bench writes what it measured to docs/benchmarks/<name>.json (with --write-docs; else to its work
directory): when, the command, the machine as measured (benchkit.host.machine) and its figures. The doc is
the template docs/benchmarks/benchmarks.md.j2 rendered over every results file there, so no figure and no
machine fact is typed into the doc, and a change of wording is a change of the template only.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from benchkit.host import ROOT, BenchError, on_sigterm

RESULTS = ROOT / "docs" / "benchmarks"
DOC = ROOT / "docs" / "benchmarks.md"
WRAP = 110


def record(script: str, machine: dict[str, str], **figures: object) -> dict:
    """A results document: the script, its command line as run, when, the machine, the figures."""
    return {
        "script": f"scripts/{Path(script).name}",
        "command": shlex.join([".venv/bin/python", f"scripts/{Path(script).name}", *sys.argv[1:]]),
        "written_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        **figures,
    }


def parser(doc: str | None, name: str, numbers: dict[str, tuple[float, str]]) -> argparse.ArgumentParser:
    """A bench's command line: --write-docs, and a number option for each of `numbers` (its default and
    what it is); the bench adds the rest."""
    found = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    found.add_argument(
        "--write-docs", action="store_true", help=f"write docs/benchmarks/{name}.json, the doc"
    )
    for option, (default, text) in numbers.items():
        found.add_argument(option, type=type(default), default=default, help=f"{text} (default {default:g})")
    return found


def run(
    name: str, script: str, machine: dict, workdir: Path, write_docs: bool, measure: Callable[[], dict]
) -> int:
    """A bench's main: `measure()` its figures (SIGTERM stops it as Ctrl-C does, so its stacks and processes
    are cleaned up), then save them; on a failure the work directory with every log is kept."""
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        figures = measure()
    except (BenchError, OSError) as exc:
        print(f"error: {exc}\noutputs kept in {workdir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; outputs kept in {workdir}", file=sys.stderr)
        return 1
    save(name, record(script, machine, **figures), workdir, write_docs)
    return 0


def save(name: str, results: dict, workdir: Path, write_docs: bool) -> Path:
    """Write the results to the workdir, and with write_docs to docs/benchmarks/ and render the doc."""
    path = (RESULTS if write_docs else workdir) / f"{name}.json"
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    if write_docs:
        DOC.write_text(render())
        print(f"wrote {path.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    else:
        print(f"results: {path}")
    return path


# --- rendering ------------------------------------------------------------------------------------
def paragraph(text: str, indent: int = 0) -> str:
    """A paragraph of the template, its whitespace collapsed, wrapped as the doc's paragraphs are."""
    wrapped = textwrap.fill(
        " ".join(text.split()), width=WRAP, subsequent_indent=" " * indent, break_on_hyphens=False
    )
    return wrapped + "\n"


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def spread(values: list[float] | None, digits: int = 2) -> str:
    """[min, median, max] as `min / median / max`."""
    return "-" if not values else " / ".join(f"{v:.{digits}f}" for v in values)


def around(values: list[float] | None, digits: int = 1) -> str:
    """[min, median, max] as `median (min-max)`."""
    if not values:
        return "none"
    low, mid, high = (f"{v:.{digits}f}" for v in values)
    return f"{mid} ({low}-{high})"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f} %"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(RESULTS),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # A parameter printed as is: 2.0 s reads "2 s", as it was given on the command line.
        finalize=lambda v: int(v) if isinstance(v, float) and v.is_integer() else v,
    )
    env.filters.update(
        paragraph=paragraph, number=number, spread=spread, around=around, percent=percent, ms=ms
    )
    return env


def render(results_dir: Path = RESULTS) -> str:
    """docs/benchmarks.md from the template and every results file in `results_dir`."""
    found = {path.stem: json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json"))}
    text = environment().get_template("benchmarks.md.j2").render(results=found)
    # One blank line between blocks, however the template's sections end.
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def plot(path: Path, title: str, panels: dict[str, list[tuple]], marks: Sequence[float] = ()) -> None:
    """A PNG of panels over one time axis: y label -> lines (x, y, matplotlib options; `step=True` draws
    steps); a None in y is a gap; `marks` are thin vertical lines (phase starts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 8), sharex=True)
    for ax, (label, lines) in zip(axes, panels.items(), strict=True):
        for x, y, options in lines:
            draw = ax.step if options.pop("step", False) else ax.plot
            draw(x, [float("nan") if v is None else v for v in y], **options)
        for at in marks:
            ax.axvline(at, color="grey", linewidth=0.5)
        ax.set_ylabel(label)
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("seconds since the start")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
