# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The app containers of a stack, from the Docker engine: state, health, CPU and memory, requests in flight.

The arithmetic on a `stats` sample is pure (tenfold_monitor.status imports `cpu_percent`,
`memory_usage` and `published` from here); Docker and HTTP calls are in the functions at the bottom.

A plain stats call takes two seconds on Docker 20.10: the engine waits for a second CPU reading. The
collector reads each container once per collection instead ("one-shot", at most one tick of the engine's
stats collector, a second), and takes its CPU use between this reading and the previous collection's, kept
per container id (`EngineMemory`); a container seen for the first time has no CPU figure until the next
collection. The stack's containers are listed in one request, and their limits inspected once. They are
read in parallel threads.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests.exceptions
from ansible_collections.tenfold.stack.plugins.module_utils.pool import (
    LABEL_POOL,
    LABEL_REPLICA,
    LABEL_STACK,
    WARM_SUFFIX,
)

from tenfold_monitor.lbmembers import member_key

CONTAINER_PORT = "8080/tcp"
DEFAULT_WORKERS = 32
HEALTH_TIMEOUT_S = 1.0
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


@dataclass(frozen=True)
class ContainerMetrics:
    name: str
    pool: str
    replica: int | None  # label tenfold.replica
    state: str  # Docker's: running, created, restarting, exited, ...
    health: str | None  # healthy, starting, unhealthy; None without a healthcheck
    address: str | None  # published HOST:PORT of 8080/tcp
    cpu_percent: float | None  # of its CPU limit (of the host's CPUs when it has none)
    memory_percent: float | None  # of its memory limit, reclaimable page cache left out
    inflight: int | None  # from its /health; None when it did not answer
    stats_pending: bool = False  # its first stats reading is still being taken (in the background)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def warm(self) -> bool:
        """Started for a scale-up to promote, out of the LB: no capacity, no demand, never readmitted."""
        return self.name.endswith(WARM_SUFFIX)


# --- stats arithmetic (pure) ----------------------------------------------------------------------
def _online_cpus(cpu: dict) -> int:
    return cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1


def cpu_cores_percent(sample: dict) -> float | None:
    """CPU use between the two readings of one stats sample, 100 = one core busy; None without a previous
    reading (precpu_stats empty: the first sample of a one-shot stats call, say)."""
    cpu, pre = sample.get("cpu_stats") or {}, sample.get("precpu_stats") or {}
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    if system_delta <= 0 or cpu_delta < 0:
        return None
    return cpu_delta / system_delta * _online_cpus(cpu) * 100.0


def cpu_percent(sample: dict) -> float | None:
    """CPU use as `docker stats` shows it (100 = one core), rounded to 0.1."""
    cores = cpu_cores_percent(sample)
    return None if cores is None else round(cores, 1)


def limit_cpus(host_config: dict) -> float | None:
    """CPUs a container may use: NanoCpus (docker run --cpus), else CpuQuota/CpuPeriod; None: no limit."""
    nano = host_config.get("NanoCpus") or 0
    if nano > 0:
        return nano / 1e9
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 0
    return quota / period if quota > 0 and period > 0 else None


def cpu_percent_of_limit(sample: dict, cpus: float | None) -> float | None:
    """CPU use as a share of the container's limit: cpu_delta / system_delta * online_cpus * 100 / cpus.

    Without a limit (`cpus` None) the container may use every online CPU, so that is the limit.
    """
    cores = cpu_cores_percent(sample)
    if cores is None:
        return None
    limit = cpus if cpus and cpus > 0 else float(_online_cpus(sample.get("cpu_stats") or {}))
    return cores / limit


def memory_usage(sample: dict) -> tuple[int, int] | None:
    """(used, limit) in bytes, page cache that can be reclaimed left out, as `docker stats` does."""
    memory = sample.get("memory_stats") or {}
    usage, limit = memory.get("usage"), memory.get("limit")
    if not isinstance(usage, int) or not isinstance(limit, int):
        return None
    stats = memory.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))  # cgroup v1, v2
    return (usage - inactive if 0 <= inactive < usage else usage), limit


def memory_percent_of_limit(sample: dict) -> float | None:
    """Memory in use as a share of the limit (the host's memory when the container has none)."""
    usage = memory_usage(sample)
    if usage is None or usage[1] <= 0:
        return None
    return usage[0] / usage[1] * 100.0


# --- container attributes (pure) ------------------------------------------------------------------
def published(attrs: dict) -> str | None:
    """HOST:PORT that 8080/tcp is published on, IPv4 first; None when it is not published."""
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(CONTAINER_PORT) or []
    if not bindings:
        return None
    first = sorted(bindings, key=lambda b: ":" in (b.get("HostIp") or ""))[0]  # IPv4 before IPv6
    return f"{first.get('HostIp') or '0.0.0.0'}:{first['HostPort']}"


def health_of(attrs: dict) -> str | None:
    return ((attrs.get("State") or {}).get("Health") or {}).get("Status") or None


def replica_index(labels: dict) -> int | None:
    text = str(labels.get(LABEL_REPLICA, "")).strip()
    return int(text) if text.isdigit() else None


def health_url(address: str | None) -> str | None:
    """The /health URL of a published address, as this host reaches it."""
    key = member_key(address)
    if key is None:
        return None
    host, _, port = key.rpartition(":")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def parse_inflight(body: bytes | str) -> int | None:
    """`inflight` of a /health answer ({"status", "instance", "pool", "inflight"}); None when it has none."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    inflight = value.get("inflight") if isinstance(value, dict) else None
    return (
        inflight if isinstance(inflight, int) and not isinstance(inflight, bool) and inflight >= 0 else None
    )


def metrics_of(
    name: str,
    attrs: dict,
    labels: dict,
    sample: dict | None,
    inflight: int | None,
    stats_pending: bool = False,
) -> ContainerMetrics:
    """One container's record from its inspect attributes, labels, stats sample and /health answer."""
    return ContainerMetrics(
        name=name,
        pool=str(labels.get(LABEL_POOL, "")),
        replica=replica_index(labels),
        state=str((attrs.get("State") or {}).get("Status") or "unknown"),
        health=health_of(attrs),
        address=published(attrs),
        cpu_percent=cpu_percent_of_limit(sample, limit_cpus(attrs.get("HostConfig") or {}))
        if sample
        else None,
        memory_percent=memory_percent_of_limit(sample) if sample else None,
        inflight=inflight,
        stats_pending=stats_pending,
    )


# --- I/O: HTTP and Docker -------------------------------------------------------------------------
def fetch_inflight(address: str | None, timeout: float = HEALTH_TIMEOUT_S) -> int | None:
    """Requests in flight reported by the replica's /health; None when it does not answer in time."""
    url = health_url(address)
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_inflight(response.read(64 << 10))
    except (OSError, ValueError):  # refused, timed out, HTTP error status, bad answer
        return None


def with_baseline(sample: dict, previous_cpu_stats: dict | None) -> dict:
    """A one-shot sample (precpu_stats empty) with the previous reading's cpu_stats as its precpu_stats."""
    return {**sample, "precpu_stats": previous_cpu_stats or {}}


def health_from_status(status: str) -> str | None:
    """The health in a listing's status text ("Up 2 minutes (healthy)"); None without a healthcheck."""
    for marker, health in (
        ("(healthy)", "healthy"),
        ("(unhealthy)", "unhealthy"),
        ("(health: starting)", "starting"),
    ):
        if marker in status:
            return health
    return None


def attrs_from_summary(summary: dict, host_config: dict) -> dict:
    """Inspect-shaped attributes (what metrics_of reads) from one entry of the engine's container listing
    and the container's HostConfig."""
    ports: dict[str, list[dict]] = {}
    for port in summary.get("Ports") or []:
        if port.get("PublicPort"):
            key = f"{port.get('PrivatePort')}/{port.get('Type', 'tcp')}"
            ports.setdefault(key, []).append(
                {"HostIp": port.get("IP", ""), "HostPort": str(port["PublicPort"])}
            )
    health = health_from_status(str(summary.get("Status") or ""))
    return {
        "State": {
            "Status": summary.get("State") or "unknown",
            **({"Health": {"Status": health}} if health else {}),
        },
        "NetworkSettings": {"Ports": ports},
        "HostConfig": host_config,
    }


@dataclass
class EngineMemory:
    """What a collector keeps between collections, per container id: the cpu_stats of its previous stats
    reading, and its HostConfig (its limits, which do not change while it lives), read once. With stats in
    the background: each container's last sample and the reading under way, in threads of its own."""

    cpu: dict[str, dict] = field(default_factory=dict)
    host_config: dict[str, dict] = field(default_factory=dict)
    samples: dict[str, dict | None] = field(default_factory=dict)
    reading: dict[str, Future] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None

    def keep_only(self, ids: set[str]) -> None:
        for table in (self.cpu, self.host_config, self.samples, self.reading):
            for gone in set(table) - ids:
                del table[gone]

    def read_later(self, client: Any, cid: str) -> None:
        """Start a stats reading of the container unless one is under way; its sample is used next time."""
        if cid in self.reading and not self.reading[cid].done():
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=DEFAULT_WORKERS, thread_name_prefix="stats")
        self.reading[cid] = self._executor.submit(self._read, client, cid)

    def _read(self, client: Any, cid: str) -> None:
        self.samples[cid] = read_stats(client, cid, self)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def read_stats(client: Any, cid: str, memory: EngineMemory) -> dict | None:
    """One one-shot stats sample, CPU taken against the previous reading kept in `memory`. It takes about
    a second (the engine samples once a second); None when the container is gone."""
    try:
        sample = with_baseline(client.api.stats(cid, stream=False, one_shot=True), memory.cpu.get(cid))
    except ENGINE_ERRORS:  # gone since it was listed, say: its figures are unknown
        return None
    if sample.get("cpu_stats"):
        memory.cpu[cid] = sample["cpu_stats"]
    return sample


def _measure(
    client: Any, summary: dict, health_timeout: float, memory: EngineMemory, stats_wait: bool
) -> ContainerMetrics:
    """One container's record; its new stats reading goes into `memory` (each thread writes its own id)."""
    cid = summary["Id"]
    labels = summary.get("Labels") or {}
    name = ((summary.get("Names") or ["/" + cid[:12]])[0]).lstrip("/")
    running = summary.get("State") == "running"
    sample, pending = None, False
    try:
        if cid not in memory.host_config:
            memory.host_config[cid] = client.api.inspect_container(cid).get("HostConfig") or {}
    except ENGINE_ERRORS:  # gone since it was listed
        pass
    if running and stats_wait:
        sample = read_stats(client, cid, memory)
    elif running:
        pending = cid not in memory.samples
        sample = memory.samples.get(cid)
        memory.read_later(client, cid)
    attrs = attrs_from_summary(summary, memory.host_config.get(cid, {}))
    inflight = fetch_inflight(published(attrs), health_timeout) if running else None
    return metrics_of(name, attrs, labels, sample, inflight, pending)


def list_summaries(client: Any, stack: str, pools: Iterable[str] | None = None) -> list[dict]:
    """The engine's listing of the stack's app containers (any state); only those of `pools` when given.
    One request, however many containers."""
    found = client.api.containers(all=True, filters={"label": [f"{LABEL_STACK}={stack}", LABEL_POOL]})
    wanted = None if pools is None else set(pools)
    return [c for c in found if wanted is None or (c.get("Labels") or {}).get(LABEL_POOL) in wanted]


def collect_containers(
    client: Any,
    stack: str,
    memory: EngineMemory,
    pools: Iterable[str] | None = None,
    health_timeout: float = HEALTH_TIMEOUT_S,
    workers: int = DEFAULT_WORKERS,
    stats_wait: bool = True,
) -> list[ContainerMetrics]:
    """Every app container of the stack, measured in parallel, ordered by pool and replica.

    One listing, then per running container one one-shot stats reading (CPU taken against the reading kept
    in `memory`) and its /health; a container's limits are inspected once, when it is first seen.
    Listing errors (engine unreachable) propagate; a container that fails to answer gets None figures.
    A stats reading takes a second: with stats_wait false, a container's figures are those of the reading
    that ended last, and the next one starts in the background, so that the listing and /health (the
    replica counts and in-flight requests) are not a second old when the monitor decides on them.
    """
    summaries = list_summaries(client, stack, pools)
    memory.keep_only({s["Id"] for s in summaries})
    if not summaries:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(summaries)))) as executor:
        records = list(
            executor.map(lambda s: _measure(client, s, health_timeout, memory, stats_wait), summaries)
        )
    return sorted(records, key=lambda m: (m.pool, m.replica if m.replica is not None else 0, m.name))
