# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""python -m tenfold_monitor run|once [--config FILE] [--stack NAME] [--interval S] [--dry-run]

python -m tenfold_monitor report [--date YYYY-MM-DD] [--metrics FILE] [--out DIR]: the daily report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# The pure scaling policy is shared with the Ansible modules: it lives in plugins/module_utils.
_PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_PROJECT / "plugins" / "module_utils"))

from tenfold_monitor import logsetup  # noqa: E402
from tenfold_monitor.service import Monitor, Settings  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tenfold_monitor", description=__doc__)
    parser.add_argument(
        "command",
        choices=["run", "once", "report"],
        help="run: watch and scale; once: one collection; report: a day's performance report (report -h)",
    )
    parser.add_argument("--config", type=Path, help="JSON settings (the monitor role renders them)")
    parser.add_argument("--stack", help="stack to watch (default tenfold)")
    parser.add_argument("--project-dir", default=str(_PROJECT), help="where scale.yml and logs/ are")
    parser.add_argument("--interval", type=float, dest="interval_s", help="seconds between collections")
    parser.add_argument("--dry-run", action="store_true", default=None, help="decide and log, never act")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:  # its own options, no monitor settings; matplotlib is loaded only here
        from tenfold_monitor import report

        return report.main(argv[1:])
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
        print(f"tenfold_monitor: bad settings: {exc}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
