# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Where the monitor's log goes: one JSON object per line in its decisions log, and text on stderr.

`run` is the only writer of the decisions log (`Settings.decisions_log`), and rotates it itself. Its stderr
is the journal under the systemd unit, and the file scripts/scaling-service.sh redirects it to elsewhere;
`once` logs to stderr only.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from datetime import UTC, datetime
from pathlib import Path

DECISIONS_MAX_BYTES = 10 * 1024 * 1024
DECISIONS_BACKUPS = 5
# Attributes every LogRecord has; anything else on a record came with `extra=` and goes into the line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonLines(logging.Formatter):
    """A record as one JSON line: at (Unix time), time (UTC, ISO 8601), level, logger, message, the
    fields given with `extra=` (a decision, say) and, after a failure, its traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "at": round(record.created, 3),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup(decisions_log: Path | None) -> None:
    """Log INFO and above to stderr and, when given, as JSON lines to `decisions_log`."""
    # journald stamps each line itself (it sets JOURNAL_STREAM for a unit's stderr): no second time there.
    text = "%(levelname)s %(name)s: %(message)s"
    stderr = logging.StreamHandler()
    stderr.setFormatter(
        logging.Formatter(text if os.environ.get("JOURNAL_STREAM") else "%(asctime)s " + text)
    )
    handlers: list[logging.Handler] = [stderr]
    if decisions_log is not None:
        decisions_log.parent.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.RotatingFileHandler(
            decisions_log, maxBytes=DECISIONS_MAX_BYTES, backupCount=DECISIONS_BACKUPS, encoding="utf-8"
        )
        file.setFormatter(JsonLines())
        handlers.append(file)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
