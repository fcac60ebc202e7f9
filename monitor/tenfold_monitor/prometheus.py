# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The monitor's Prometheus endpoint (127.0.0.1:<prometheus_port>): what only the monitor knows.

Named as Prometheus' guidelines say (https://prometheus.io/docs/practices/naming/): shares of a limit are
0-1 `_ratio` gauges, what is counted is a `_total` counter, times are `_seconds`; every family has its
`# HELP` and `# TYPE`. A series whose figure is unknown this tick (Docker or the host could not be read, a
pool no longer seen) is removed rather than left at its last value, so a query sees a gap, not a stale
number.

Traffic is not here: the LB counts what each pool served and refused itself, as counters and an upstream
response-time histogram, and exports them on its own GET /metrics (`tenfold_lb_requests_total`,
`tenfold_lb_rejected_requests_total`, `tenfold_lb_upstream_response_time_seconds`, ...). A copy here would
be a second name for the same count; rates and quantiles are `rate()` and `histogram_quantile()` over those
(docs/operations.md, "Metrics").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from ansible_collections.tenfold.stack.plugins.module_utils import policy
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, start_http_server

from tenfold_monitor.collect import TRAFFIC_STATES, Snapshot

POOL_LABELS = ("stack", "pool")
RESULTS = ("ok", "failed")


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


class Exporter:
    """The monitor's metrics in a registry of their own (no process-wide state), served when `port` is set."""

    def __init__(self, stack: str, pools: Iterable[str], port: int = 0) -> None:
        self.stack = stack
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # the monitor's own CPU, memory and open files

        def gauge(name: str, doc: str, labels: Iterable[str] = POOL_LABELS) -> Gauge:
            return Gauge(name, doc, list(labels), registry=self.registry)

        self.pool_gauges = {
            "replicas": gauge("tenfold_pool_replicas", "Replicas running, warm ones apart."),
            "serving": gauge(
                "tenfold_pool_serving_replicas", "Replicas healthy and active members of the LB."
            ),
            "warm": gauge("tenfold_pool_warm_replicas", "Warm replicas, healthy and out of the LB."),
            "desired": gauge("tenfold_pool_desired_replicas", "Replicas the scaling policy wants now."),
            "cpu": gauge(
                "tenfold_pool_cpu_usage_ratio",
                "Mean CPU use of the serving replicas, as a share of each one's CPU limit (1 = the limit).",
            ),
            "memory": gauge(
                "tenfold_pool_memory_usage_ratio",
                "Mean memory use of the serving replicas, as a share of each one's memory limit.",
            ),
        }
        self.host_cpu = gauge(
            "tenfold_host_cpu_usage_ratio", "CPU use of the host, all cores (0-1).", ["stack"]
        )
        self.host_memory = gauge(
            "tenfold_host_memory_usage_ratio", "Memory in use on the host (0-1).", ["stack"]
        )
        self.fresh = gauge(
            "tenfold_monitor_traffic_fresh",
            "1 when this tick's traffic figures are trusted, else 0.",
            ["stack"],
        )
        self.states = gauge(
            "tenfold_monitor_traffic_state",
            "1 for this tick's traffic state, 0 for the others.",
            ["stack", "state"],
        )
        self.collected = gauge(
            "tenfold_monitor_last_collection_timestamp_seconds",
            "When the monitor last collected (Unix time): a monitor that stopped collecting shows here.",
            ["stack"],
        )
        self.scale_runs = Counter(
            "tenfold_monitor_scale_runs",  # the client library adds _total
            "scale.yml runs the monitor started that have finished, by result.",
            ["stack", "pool", "result"],
            registry=self.registry,
        )
        self.promotions = Counter(
            "tenfold_monitor_promotions",
            "Fast-path promotions of warm replicas the monitor tried, by result.",
            ["stack", "pool", "result"],
            registry=self.registry,
        )
        for pool in pools:  # counters exist from the start at 0, so rate() sees their first increase
            for result in RESULTS:
                self.scale_runs.labels(stack, pool, result)
                self.promotions.labels(stack, pool, result)
        self._pools: set[str] = set()
        self._server = start_http_server(port, addr="127.0.0.1", registry=self.registry) if port else None

    def update(self, snapshot: Snapshot, decisions: Iterable[policy.Decision]) -> None:
        """This tick's figures; unknown ones (None), and pools no longer seen, lose their series."""
        desired = {d.pool: d.desired for d in decisions}
        for name in self._pools - set(snapshot.pools):
            for metric in self.pool_gauges.values():
                self._remove(metric, self.stack, name)
        self._pools = set(snapshot.pools)
        for name, pool in snapshot.pools.items():
            values = {
                "replicas": pool.replicas,
                "serving": pool.serving,
                "warm": pool.warm,
                "desired": desired.get(name),
                "cpu": _ratio(pool.cpu_percent),
                "memory": _ratio(pool.memory_percent),
            }
            for key, value in values.items():
                self._set(self.pool_gauges[key], value, self.stack, name)
        self._set(self.host_cpu, _ratio(snapshot.host_cpu_percent), self.stack)
        self._set(self.host_memory, _ratio(snapshot.host_memory_percent), self.stack)
        self.fresh.labels(self.stack).set(1 if snapshot.traffic_state == "ok" else 0)
        for state in TRAFFIC_STATES:
            self.states.labels(self.stack, state).set(1 if snapshot.traffic_state == state else 0)
        self.collected.labels(self.stack).set(snapshot.at)

    def scale_run_finished(self, pool: str, ok: bool) -> None:
        self.scale_runs.labels(self.stack, pool, "ok" if ok else "failed").inc()

    def promotion(self, pool: str, result: str) -> None:
        """A fast-path promotion's result ("ok", "failed"); "skipped" (nothing tried) is not counted."""
        if result in RESULTS:
            self.promotions.labels(self.stack, pool, result).inc()

    def close(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None

    @staticmethod
    def _set(metric: Gauge, value: float | None, *labels: str) -> None:
        if value is None:
            Exporter._remove(metric, *labels)
        else:
            metric.labels(*labels).set(value)

    @staticmethod
    def _remove(metric: Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):  # never set: nothing to remove
            metric.remove(*labels)
