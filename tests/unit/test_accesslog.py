"""tenfold_monitor.accesslog: the LB's JSON access log read incrementally, through rotation and truncation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tenfold_monitor.accesslog import AccessLogReader, parse_line


def line(n: int, pool: str = "backend") -> str:
    return json.dumps({"msec": 1_000.0 + n, "status": 200, "pool": pool, "request_time": 0.01, "n": n}) + "\n"


def append(path: Path, text: str | bytes) -> None:
    with path.open("ab") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)


def numbers(entries: list[dict]) -> list[int]:
    return [entry["n"] for entry in entries]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "access.json.log"


@pytest.fixture
def open_reader() -> Iterator[Callable[..., AccessLogReader]]:
    """AccessLogReader(...), closed when the test ends."""
    readers: list[AccessLogReader] = []

    def make(*args: Any, **kwargs: Any) -> AccessLogReader:
        readers.append(AccessLogReader(*args, **kwargs))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


def test_only_lines_appended_since_the_last_read_are_returned(log, open_reader):
    append(log, line(1) + line(2))
    reader = open_reader(log)
    assert numbers(reader.read()) == [1, 2]
    assert reader.read() == []
    append(log, line(3))
    assert numbers(reader.read()) == [3]


def test_start_at_end_skips_what_was_there_before(log, open_reader):
    append(log, line(1) + line(2))
    reader = open_reader(log, start_at_end=True)
    assert reader.read() == []
    append(log, line(3))
    assert numbers(reader.read()) == [3]


def test_start_at_end_in_the_middle_of_a_line_skips_its_remainder(log, open_reader):
    append(log, line(1) + line(2)[:10])
    reader = open_reader(log, start_at_end=True)
    assert reader.read() == []
    append(log, line(2)[10:] + line(3))
    assert numbers(reader.read()) == [3]
    assert reader.malformed == 0


def test_a_partial_line_waits_for_its_newline_across_reads(log, open_reader):
    text = line(1)
    reader = open_reader(log)
    append(log, text[:7])
    assert reader.read() == []
    append(log, text[7:20])
    assert reader.read() == []
    append(log, text[20:] + line(2)[:5])
    assert numbers(reader.read()) == [1]
    append(log, line(2)[5:])
    assert numbers(reader.read()) == [2]
    assert reader.malformed == 0


def test_malformed_lines_are_counted_and_skipped(log, open_reader):
    append(log, line(1) + "{not json\n" + "[1, 2]\n" + '"text"\n' + "\n" + b"\xff\xfe\n".decode("latin-1"))
    append(log, b"\xff\xfe{\n")
    append(log, line(2))
    reader = open_reader(log)
    assert numbers(reader.read()) == [1, 2]
    assert reader.malformed == 5  # blank lines are not malformed, just empty


def test_rotation_by_rename_finishes_the_old_file_then_reads_the_new_one_from_the_start(log, open_reader):
    append(log, line(1))
    reader = open_reader(log)
    assert numbers(reader.read()) == [1]
    append(log, line(2))  # written before the rotation, not read yet
    log.rename(log.with_suffix(".log.1"))
    append(log.with_suffix(".log.1"), line(3))  # nginx still writes to the old file until it reopens
    append(log, line(4))  # the new file
    assert numbers(reader.read()) == [2, 3, 4]
    assert reader.rotations == 1
    append(log, line(5))
    assert numbers(reader.read()) == [5]


def test_while_the_path_is_missing_after_a_rename_the_old_file_keeps_being_read(log, open_reader):
    append(log, line(1))
    reader = open_reader(log)
    reader.read()
    rotated = log.with_suffix(".log.1")
    log.rename(rotated)
    append(rotated, line(2))
    assert numbers(reader.read()) == [2]
    assert reader.missing and reader.available
    append(rotated, line(3))
    assert numbers(reader.read()) == [3]
    append(log, line(4))  # nginx reopened its logs
    assert numbers(reader.read()) == [4]
    assert not reader.missing and reader.rotations == 1


def test_an_unterminated_last_line_of_a_rotated_file_is_taken_when_whole(log, open_reader):
    reader = open_reader(log)
    append(log, line(1) + line(2).rstrip("\n"))
    assert numbers(reader.read()) == [1]
    log.rename(log.with_suffix(".log.1"))
    append(log, line(3))
    assert numbers(reader.read()) == [2, 3]


def test_copytruncate_restarts_at_the_beginning(log, open_reader):
    append(log, line(1) + line(2))
    reader = open_reader(log)
    assert numbers(reader.read()) == [1, 2]
    os.truncate(log, 0)  # logrotate copytruncate: same inode, size 0
    append(log, line(3))
    assert numbers(reader.read()) == [3]
    assert reader.truncations == 1


def test_truncation_drops_a_pending_partial_line(log, open_reader):
    append(log, line(1) + line(2) + line(3)[:15])
    reader = open_reader(log)
    assert numbers(reader.read()) == [1, 2]
    os.truncate(log, 0)
    append(log, line(4))
    assert numbers(reader.read()) == [4]
    assert reader.malformed == 0


def test_a_missing_file_returns_nothing_and_says_so_until_it_appears(log, open_reader):
    reader = open_reader(log, start_at_end=True)
    assert reader.read() == []
    assert reader.missing and not reader.available
    append(log, line(1))  # created after the reader: read from its start
    assert numbers(reader.read()) == [1]
    assert not reader.missing and reader.available


def test_a_removed_file_is_reported_missing(log, open_reader):
    append(log, line(1))
    reader = open_reader(log)
    reader.read()
    log.unlink()
    assert reader.read() == []
    assert reader.missing


def test_reads_are_bounded_and_resume_where_they_stopped(log, open_reader):
    lines = [line(n) for n in range(100)]
    append(log, "".join(lines))
    reader = open_reader(log, max_bytes=len(lines[0]) * 10 + 5)
    first = reader.read()
    assert numbers(first) == list(range(10))
    seen = numbers(first)
    for _ in range(20):
        seen += numbers(reader.read())
    assert seen == list(range(100))


def test_a_read_that_stops_at_its_bound_says_the_reader_is_behind_and_by_how_much(log, open_reader):
    size = len(line(0))
    append(log, "".join(line(n) for n in range(10)))
    reader = open_reader(log, max_bytes=size * 4)
    assert reader.caught_up  # nothing read yet, nothing known to be left
    reader.read()
    assert (reader.caught_up, reader.behind_bytes) == (False, size * 6)
    reader.read()
    assert (reader.caught_up, reader.behind_bytes) == (False, size * 2)
    reader.read()
    assert (reader.caught_up, reader.behind_bytes) == (True, 0)


def test_the_bound_covers_the_rest_of_a_rotated_file_and_the_new_one_together(log, open_reader):
    size = len(line(0))
    reader = open_reader(log, max_bytes=size * 3)
    append(log, line(0))
    reader.read()
    append(log, line(1) + line(2) + line(3) + line(4))
    log.rename(log.with_suffix(".log.1"))
    append(log, line(5) + line(6) + line(7))
    assert numbers(reader.read()) == [1, 2, 3]
    assert numbers(reader.read()) == [4, 5, 6]  # the old file's last line, then the new file's first two
    assert numbers(reader.read()) == [7]


def test_an_over_long_line_is_dropped_as_malformed_and_reading_goes_on(log, open_reader):
    reader = open_reader(log, max_bytes=64, max_line_bytes=100)
    append(log, "x" * 300 + "\n" + line(1))
    found = []
    for _ in range(20):
        found += reader.read()
    assert numbers(found) == [1]
    assert reader.malformed == 1


def test_parse_line_accepts_only_json_objects():
    assert parse_line(b'{"a": 1}') == {"a": 1}
    assert parse_line(b"[1]") is None
    assert parse_line(b"{") is None
    assert parse_line(b"\xff") is None
