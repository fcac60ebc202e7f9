# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""tenfold-monitor run|once [--config FILE] [--stack NAME] [--interval S] [--dry-run]

tenfold-monitor check --config FILE|-: load the settings and print what is wrong with them, as JSON
tenfold-monitor report [--date YYYY-MM-DD] [--metrics FILE] [--out DIR]: the daily report
tenfold-monitor status [--json] [--stack NAME] ...: the stack at a glance (status -h; auto-scale.sh status)

(`python -m tenfold_monitor ...` is the same.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tenfold_monitor import logsetup
from tenfold_monitor.service import Monitor, Settings, SettingsError, SettingsProblem


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tenfold-monitor", description=__doc__)
    parser.add_argument(
        "command",
        choices=["run", "once", "check", "report", "status"],
        help="run: watch and scale; once: one collection; check: check the settings only;"
        " report: a day's performance report (report -h); status: the stack at a glance (status -h)",
    )
    parser.add_argument(
        "--config", type=Path, help="JSON settings (the monitor role renders them; - = stdin)"
    )
    parser.add_argument("--stack", help="stack to watch (default tenfold)")
    parser.add_argument(
        "--project-dir",
        help="where scale.yml and logs/ are (default: the settings', else the current directory)",
    )
    parser.add_argument("--interval", type=float, dest="interval_s", help="seconds between collections")
    parser.add_argument("--dry-run", action="store_true", default=None, help="decide and log, never act")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:  # its own options, no monitor settings; matplotlib is loaded only here
        from tenfold_monitor import report

        return report.main(argv[1:])
    if argv[:1] == ["status"]:  # its own options; it reads, run from the checkout
        from tenfold_monitor import status

        return status.main(argv[1:])
    args = parse_args(argv)
    try:
        settings = Settings.load(
            args.config,
            stack=args.stack,
            project_dir=args.project_dir,
            interval_s=args.interval_s,
            dry_run=True if args.command == "once" else args.dry_run,
        )
    except (OSError, ValueError, TypeError) as exc:
        if args.command == "check":
            return check_report(exc)
        print(f"tenfold-monitor: bad settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        return check_report(None)
    if args.command == "run":
        logsetup.setup(settings.path(settings.decisions_log))
        Monitor(settings).run()
        return 0
    # once: two collections a second apart, so rates have something to compare with. It writes no file:
    # the metrics log, the decisions log and the state file have one writer, a running monitor.
    logsetup.setup(None)
    monitor = Monitor(settings, writes=False)
    try:
        monitor.tick()
        time.sleep(1.0)
        decisions = monitor.tick()
    finally:
        monitor.close()
    report = {"decisions": [d.as_dict() for d in decisions], "warnings": monitor.last_warnings}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def check_report(error: Exception | None) -> int:
    """`check`: every problem as JSON on stdout ({"problems": [{"settings": [...], "message": ...}]}), each
    setting named as in the settings file, so the monitor role can name its own variables. 0: none."""
    if isinstance(error, SettingsError):
        problems = error.problems
    else:
        problems = [SettingsProblem((), str(error))] if error else []
    print(json.dumps({"problems": [problem.as_dict() for problem in problems]}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
