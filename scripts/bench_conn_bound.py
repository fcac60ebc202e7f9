#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""What the per-address connection bound (the stack's nftables table) costs a new connection: TCP
connects to the LB with the table loaded and removed in turn (it is loaded again at the end, whatever
happens).

How it measures and what each figure means: the doc's section "The per-address connection bound" (its
template: docs/benchmarks/conn-bound.md.j2). Every load and wait is bounded. --write-docs writes
docs/benchmarks/conn-bound.json and renders the doc.

    .venv/bin/python scripts/bench_conn_bound.py --vars STACK.yml --rounds 3 --connections 3000 --write-docs
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import host, results
from benchkit.host import BenchError
from benchkit.stack import Stack, outside_allowlist, parse_sources
from benchkit.stats import percentile

WATCHED = (
    "collections/ansible_collections/tenfold/stack/roles/nginx_lb/templates/lb-limits.nft.j2",
    "scripts/bench_conn_bound.py",
)
MODES = ("bound", "no bound")


NUMBERS = {  # the bench's number options: default, what it is
    "--rounds": (3, "rounds of both modes, 1-20"),
    "--connections": (3000, "connects per run, 100-100000"),
}


def table(stack: str) -> str:
    return "tenfold_" + "".join(c if c.isalnum() or c == "_" else "_" for c in stack) + "_lb"


def set_mode(stack: str, mode: str) -> None:
    """Load the stack's table (its file replaces it whole), or remove it (declared first: none is fine)."""
    if mode == "bound":
        subprocess.run(["nft", "-f", f"/etc/tenfold/{stack}/lb-limits.nft"], check=True)
    else:
        script = f"table inet {table(stack)} {{}}\ndelete table inet {table(stack)}\n"
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)


def connect_times(port: int, sources: list[str], count: int) -> list[float]:
    """Seconds each of `count` TCP connects took (the sources in turn); the socket is closed at once."""
    times = []
    for i in range(count):
        with socket.socket() as sock:
            sock.settimeout(5)
            sock.bind((sources[i % len(sources)], 0))
            started = time.perf_counter()
            sock.connect(("127.0.0.1", port))
            times.append(time.perf_counter() - started)
    return times


def summary(times: list[float], seconds: float) -> dict:
    return {
        "p50_us": percentile(times, 50) * 1e6,
        "p95_us": percentile(times, 95) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
        "per_s": len(times) / seconds,
    }


def run(args: argparse.Namespace, stack: Stack) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    try:
        for round_ in range(args.rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:  # alternate which goes first
                set_mode(stack.name, mode)
                started = time.perf_counter()
                times = connect_times(stack.https_port, args.sources, args.connections)
                results[mode].append(summary(times, time.perf_counter() - started))
                print(f"round {round_ + 1} {mode}: {results[mode][-1]}", flush=True)
                # Connections closed by us sit in TIME_WAIT, which ct count does not count; a pause lets
                # the conntrack entries of one run leave before the next.
                time.sleep(2)
    finally:
        set_mode(stack.name, "bound")
    return results


def modes(found: dict[str, list[dict]]) -> dict[str, dict]:
    """Per mode, the median over the rounds of each figure, and the rounds' spread of p50."""
    return {
        mode: {
            **{key: statistics.median(r[key] for r in runs) for key in runs[0]},
            "p50_range": [min(r["p50_us"] for r in runs), max(r["p50_us"] for r in runs)],
        }
        for mode, runs in found.items()
    }


def main() -> int:
    parser = results.parser(__doc__, "conn-bound", NUMBERS)
    parser.add_argument(
        "--vars", type=Path, required=True, help="the stack's variables (like tests/integration/stack.yml)"
    )
    parser.add_argument("--sources", default="127.0.5.1-127.0.5.50", help="addresses off the allowlist")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 100 <= args.connections <= 100_000:
        parser.error("--rounds must be 1-20 and --connections 100-100000")
    workdir = Path(tempfile.mkdtemp(prefix="tenfold-bench-conn-bound-"))

    def measure_all() -> dict:
        stack = Stack.from_file(args.vars, workdir)
        args.sources = parse_sources(args.sources)
        if len(outside_allowlist(args.sources, stack.allowlist)) != len(args.sources):
            raise BenchError(
                f"the sources must be off nginx_lb_allowlist of {args.vars}: the bound exempts it"
            )
        if not Path(f"/etc/tenfold/{stack.name}/lb-limits.nft").exists():
            raise BenchError(
                f"stack {stack.name} has no connection bound (nginx_lb_conn_limit_per_address 0?)"
            )
        found = {"connections": args.connections, "rounds": args.rounds, "modes": modes(run(args, stack))}
        return found | {
            "sources": {"count": len(args.sources), "range": f"{args.sources[0]}-{args.sources[-1]}"}
        }

    return results.run("conn-bound", __file__, host.machine(WATCHED), workdir, args.write_docs, measure_all)


if __name__ == "__main__":
    sys.exit(main())
