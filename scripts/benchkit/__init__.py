# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The benchmark harness: what the benches (scripts/bench_*.py), the load tests (scripts/load_test.py) and
the integration tests share. The scripts import it as `benchkit` (scripts/ is their directory; the tests'
conftest puts it on their path).

- host.py: this machine's facts, CPU load and ports; stopping a process group.
- stack.py: a stack's variables and playbooks, a bench's own stack up and down, its pools.
- monitor.py: the monitor on a stack, its logs in a work directory.
- load.py: paced HTTPS clients (many source addresses, keep-alive, no retry, every failure counted).
- locust.py, locustfile.py, spike_shape.py: headless locust with the load tests' users.
- stats.py: statistics and the load tests' criteria, result files and timeline.
- results.py: a bench's JSON results (docs/benchmarks/*.json) and the doc they render (docs/benchmarks.md).
"""
