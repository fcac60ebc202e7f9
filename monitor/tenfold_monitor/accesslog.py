# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The LB's JSON access log, read incrementally: what nginx appended since the last read.

nginx writes one JSON object per line (`log_format tenfold_json`), in 64k buffers flushed every second, so
a read may end in the middle of a line. The reader keeps the file open and its offset, and survives:

- rotation by rename (logrotate's default): the path names a new inode. The old file stays open: it is
  read to its end (nginx writes there until it reopens its logs), then the new file is read from 0. While
  the path is missing, the old file keeps being read.
- truncation in place (copytruncate): the file is shorter than the offset, so reading restarts at 0.
- partial lines: an unterminated last line waits in a buffer until its newline arrives.
- malformed lines (not JSON, not an object): counted in `malformed` and skipped.
- a missing file: `read()` returns [] and `missing` is set until the file appears.

A truncation followed by more writes than were there before, between two reads, cannot be told apart from
appends; the lines written before the read are then skipped (they are rare: copytruncate runs daily).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 8 << 20
DEFAULT_MAX_LINE_BYTES = 1 << 20


def parse_line(line: bytes) -> dict | None:
    """One log line as a JSON object, or None when it is not one."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class _OpenFile:
    handle: BinaryIO
    identity: tuple[int, int]  # (st_dev, st_ino)
    offset: int


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return (stat.st_dev, stat.st_ino)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


class AccessLogReader:
    """Reads the JSON lines appended to `path` since the previous `read()`, at most `max_bytes` per call.

    `start_at_end`: a file that exists at the first read is read from its current end, not from 0 (a
    monitor that starts does not replay a day of log). Files that appear later are read from 0.
    """

    def __init__(
        self,
        path: Path | str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        start_at_end: bool = False,
    ) -> None:
        if max_bytes < 1 or max_line_bytes < 1:
            raise ValueError("max_bytes and max_line_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.missing = False  # the path did not exist at the last read
        self.malformed = 0  # lines skipped because they are not JSON objects, since the reader was made
        self.rotations = 0
        self.truncations = 0
        self._start_at_end = start_at_end
        self._current: _OpenFile | None = None
        self._partial = b""
        self._discarding = False  # inside an over-long line: drop bytes up to its newline
        self.caught_up = True  # the last read() reached the end of the log, within max_bytes

    @property
    def available(self) -> bool:
        """A log file is open: what `read()` returns reflects what nginx writes."""
        return self._current is not None

    @property
    def behind_bytes(self) -> int:
        """Bytes of the open file not read yet (nginx may have added some since the last read)."""
        if self._current is None:
            return 0
        return max(0, os.fstat(self._current.handle.fileno()).st_size - self._current.offset)

    def read(self) -> list[dict]:
        """The entries appended since the last call (bounded by max_bytes), oldest first."""
        entries: list[dict] = []
        budget = self.max_bytes
        self.caught_up = False  # until a read below reaches the end of the file nginx writes
        stat = _stat(self.path)
        from_end, self._start_at_end = self._start_at_end and stat is not None, False
        self.missing = stat is None
        current = self._current
        if current is not None and (stat is None or _identity(stat) != current.identity):
            # Rotated or removed: what nginx still writes to the old file comes first.
            used, at_end = self._read_into(current, budget, entries)
            budget -= used
            if stat is None:
                self.caught_up = at_end
                return entries
            if not at_end:
                return entries
            self._finish_line(entries)
            self._close()
            self.rotations += 1
        if stat is None:
            self.caught_up = True  # nothing to read: the state "missing" says the rest
            return entries
        if self._current is None and not self._open(from_end=from_end):
            self.missing = True
            return entries
        assert self._current is not None
        self._check_truncation(self._current)
        if budget > 0:
            self.caught_up = self._read_into(self._current, budget, entries)[1]
        return entries

    def close(self) -> None:
        self._close()

    def __enter__(self) -> AccessLogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    # --- internals -------------------------------------------------------------------------------
    def _open(self, from_end: bool) -> bool:
        try:
            handle = self.path.open("rb", buffering=0)
        except OSError:
            return False
        opened = os.fstat(handle.fileno())  # what was opened, should the path have changed since the stat
        offset = opened.st_size if from_end else 0
        self._current = _OpenFile(handle, _identity(opened), offset)
        self._partial = b""
        # Starting at the end of a line being written: its remainder is no whole line.
        self._discarding = offset > 0 and os.pread(handle.fileno(), 1, offset - 1) != b"\n"
        return True

    def _close(self) -> None:
        if self._current is not None:
            self._current.handle.close()
            self._current = None
        self._partial, self._discarding = b"", False

    def _check_truncation(self, current: _OpenFile) -> None:
        size = os.fstat(current.handle.fileno()).st_size
        if size < current.offset:
            current.offset = 0
            self._partial, self._discarding = b"", False
            self.truncations += 1

    def _read_into(self, current: _OpenFile, budget: int, entries: list[dict]) -> tuple[int, bool]:
        """Read up to `budget` bytes of `current` into `entries`: (bytes read, reached end of file)."""
        if budget <= 0:
            return 0, False
        current.handle.seek(current.offset)
        data = current.handle.read(budget) or b""
        current.offset += len(data)
        self._consume(data, entries)
        return len(data), len(data) < budget

    def _consume(self, data: bytes, entries: list[dict]) -> None:
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data, self._discarding = data[newline + 1 :], False
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._take(line, entries)
        if len(self._partial) > self.max_line_bytes:
            self.malformed += 1
            self._partial, self._discarding = b"", True

    def _take(self, line: bytes, entries: list[dict]) -> None:
        if not line.strip():
            return
        entry = parse_line(line)
        if entry is None:
            self.malformed += 1
        else:
            entries.append(entry)

    def _finish_line(self, entries: list[dict]) -> None:
        """The old file is done: an unterminated last line is all there will ever be of it."""
        if self._partial and not self._discarding:
            self._take(self._partial, entries)
        self._partial, self._discarding = b"", False
