#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Run the reliability and security tests and write what they measured to docs/reliability.md.

The tests are the integration tests of `make test` (TLS scans, abuse, faults under load, bad input); they
run here on their own session stack (tests/integration/stack.yml, or TENFOLD_IT_STACK_VARS) with
TENFOLD_FIGURES set, so every figure they record lands in a JSON file, and with a JUnit XML report for each
test's outcome and duration. Nothing in the doc's generated section is typed by hand.

    .venv/bin/python scripts/reliability_report.py [--write-docs] [-- pytest arguments]

--write-docs rewrites the section between the doc's `<!-- reliability:start -->` and `:end -->` markers.
Exits 1 when a test failed (the section then says which).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchkit.host import BIN, ROOT, machine

DOC = ROOT / "docs" / "reliability.md"
TESTS = [
    "tests/integration/test_tls_scan.py",
    "tests/integration/test_abuse.py",
    "tests/integration/test_faults_lb.py",
    "tests/integration/test_faults_monitor.py",
    "tests/integration/test_monitor_abuse.py",
    "tests/integration/test_bad_input.py",
]
WATCHED = ["collections", "monitor", "images", "site.yml", "scale.yml", "playbooks", *TESTS]


def outcomes(junit: Path) -> list[dict]:
    """(test id, outcome, seconds) of every test case in a JUnit XML report."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        module = case.get("classname", "").rsplit(".", 1)[-1]
        rows.append(
            {
                "test": f"{module}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time", 0)),
            }
        )
    return rows


def cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(figures: list[dict], tests: list[dict], facts: dict[str, str], command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    passed = sum(1 for t in tests if t["outcome"] == "passed")
    lines = [
        "## Measured",
        "",
        f"Written by `scripts/reliability_report.py` on {when}. Rerun it to replace this section:",
        "",
        "```bash",
        command,
        "```",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {cell(v)} |" for k, v in facts.items()),
        "",
    ]
    sections: dict[str, list[dict]] = {}
    for row in figures:
        sections.setdefault(row["section"], []).append(row)
    for section, rows in sections.items():
        lines += [f"### {section}", "", "| figure | value | note |", "| --- | --- | --- |"]
        for row in rows:
            value = f"{row['value']} {row['unit']}".strip()
            lines.append(f"| {cell(row['label'])} | {cell(value)} | {cell(row['note'])} |")
        lines.append("")
    lines += [
        f"### Tests: {passed} of {len(tests)} passed, {sum(t['seconds'] for t in tests):.0f} s in all",
        "",
        "| test | outcome | s |",
        "| --- | --- | --- |",
        *(f"| `{cell(t['test'])}` | {t['outcome']} | {t['seconds']:.1f} |" for t in tests),
    ]
    return "\n".join(lines)


def write_section(name: str, section: str, path: Path) -> None:
    """Replace the doc's section `name` (between its markers); everything else stays as it is."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{start}\n{section.rstrip()}\n{end}", text, count=1))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", action="store_true", help="rewrite the Measured section of the doc")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tenfold-reliability-") as work:
        figures_path, junit = Path(work) / "figures.json", Path(work) / "junit.xml"
        env_figures = {"TENFOLD_FIGURES": str(figures_path)}
        cmd = [str(BIN / "pytest"), "-q", f"--junitxml={junit}", *TESTS, *args.pytest_args]
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env_figures}, check=False)
        if not junit.exists():
            print(f"reliability-report: pytest wrote no report (exit {proc.returncode})", file=sys.stderr)
            return 1
        tests = outcomes(junit)
        figures = json.loads(figures_path.read_text()) if figures_path.exists() else []
    section = render(
        figures,
        tests,
        machine(WATCHED),
        ". .venv/bin/activate && python scripts/reliability_report.py --write-docs",
    )
    print(section)
    if args.write_docs:
        write_section("reliability", section, DOC)
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
