#!/usr/bin/env python3
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""What the per-address connection bound (the stack's nftables table) costs a new connection.

The bound acts on a connection's first packet only (`ct state new`, a meter keyed by the source address),
so its cost is in the TCP handshake: this opens and closes bounded numbers of TCP connections to the LB's
HTTPS port from addresses off the allowlist, with the table loaded and removed in turn, round after round
in one run (the machine is shared and noisy), and reports the connect times of each. The table is loaded
again at the end, whatever happens.

    .venv/bin/python scripts/bench-conn-bound.py --vars STACK.yml --rounds 3 --connections 3000 --write-docs
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import load_test as lt
from benchlib import DOC, machine, section_head, write_section

SCRIPT = "scripts/bench-conn-bound.py"
WATCHED = ("collections/ansible_collections/tenfold/stack/roles/nginx_lb/templates/lb-limits.nft.j2", SCRIPT)
MODES = ("bound", "no bound")


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


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(times: list[float], seconds: float) -> dict:
    ordered = sorted(times)
    return {
        "p50_us": percentile(ordered, 0.50) * 1e6,
        "p95_us": percentile(ordered, 0.95) * 1e6,
        "p99_us": percentile(ordered, 0.99) * 1e6,
        "per_s": len(times) / seconds,
    }


def run(args: argparse.Namespace, target: lt.Target) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    try:
        for round_ in range(args.rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:  # alternate which goes first
                set_mode(target.stack, mode)
                started = time.perf_counter()
                times = connect_times(target.https_port, args.sources, args.connections)
                results[mode].append(summary(times, time.perf_counter() - started))
                print(f"round {round_ + 1} {mode}: {results[mode][-1]}", flush=True)
                # Connections closed by us sit in TIME_WAIT, which ct count does not count; a pause lets
                # the conntrack entries of one run leave before the next.
                time.sleep(2)
    finally:
        set_mode(target.stack, "bound")
    return results


def section(args: argparse.Namespace, results: dict[str, list[dict]], when: str) -> str:
    facts = machine(WATCHED)
    command = (
        f".venv/bin/python scripts/bench-conn-bound.py --vars STACK.yml --rounds {args.rounds}"
        f" --connections {args.connections} --write-docs"
    )
    lines = [
        *section_head(
            "The per-address connection bound", "scripts/bench-conn-bound.py", when, command, facts
        ),
        *textwrap.wrap(
            f"**Method.** {args.connections} TCP connects to the LB's HTTPS port per run, one after another,"
            f" from {len(args.sources)} addresses off the allowlist in turn"
            f" ({args.sources[0]}-{args.sources[-1]}), each closed as soon as it is open (no TLS, no request:"
            " the bound acts on the first packet only). The stack's nftables table is loaded for one run and"
            f" removed for the other, in alternating order, {args.rounds} rounds in one session; each figure"
            " is the median over the rounds of that run's percentile (nearest rank) or rate.",
            110,
        ),
        "",
        "| | connect p50 µs | p95 µs | p99 µs | connects/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    medians = {}
    for mode in MODES:
        runs = results[mode]
        medians[mode] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        m = medians[mode]
        lines.append(
            f"| {mode} | {m['p50_us']:.0f} | {m['p95_us']:.0f} | {m['p99_us']:.0f} | {m['per_s']:.0f} |"
        )
    cost = medians["bound"]["p50_us"] - medians["no bound"]["p50_us"]
    spread = {mode: [r["p50_us"] for r in results[mode]] for mode in MODES}
    lines += [
        "",
        *textwrap.wrap(
            f"The bound's cost at the median connect: {cost:+.0f} µs (bound minus no bound), against a"
            f" spread between rounds of {min(spread['bound']):.0f}-{max(spread['bound']):.0f} µs with the"
            f" bound and {min(spread['no bound']):.0f}-{max(spread['no bound']):.0f} µs without. Requests on"
            " a kept-alive connection never meet the rule.",
            110,
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vars", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--sources", default="127.0.5.1-127.0.5.50")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 100 <= args.connections <= 100_000:
        print("--rounds must be 1-20 and --connections 100-100000", file=sys.stderr)
        return 2
    target = lt.load_target(args.vars)
    args.sources = lt.parse_sources(args.sources)
    if len(lt.outside_allowlist(args.sources, target.allowlist)) != len(args.sources):
        print(
            f"the sources must be off nginx_lb_allowlist of {args.vars}: the bound exempts it",
            file=sys.stderr,
        )
        return 2
    if not Path(f"/etc/tenfold/{target.stack}/lb-limits.nft").exists():
        print(
            f"stack {target.stack} has no connection bound (nginx_lb_conn_limit_per_address 0?)",
            file=sys.stderr,
        )
        return 2
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = run(args, target)
    if args.write_docs:
        write_section("bench-conn-bound", section(args, results, when), args.doc)
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
