#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Render docs/benchmarks.md from the results in docs/benchmarks/*.json and the template there.

    .venv/bin/python scripts/bench_docs.py [RESULTS.json ...]

A results file given (one a bench wrote to its work directory without --write-docs) is copied into
docs/benchmarks/ first, under its own name (scale.json, monitor.json, ...).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchkit.results import DOC, RESULTS, render


def main(argv: list[str]) -> int:
    for name in argv:
        shutil.copyfile(Path(name), RESULTS / Path(name).name)
    DOC.write_text(render())
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
