"""The load generator is the benchmark harness's (scripts/benchkit/load.py); this name stays for the fleet
suite's `from load import Load` until it imports the package itself."""

from benchkit.load import Answer, Load, Tally, Worker

__all__ = ["Answer", "Load", "Tally", "Worker"]
