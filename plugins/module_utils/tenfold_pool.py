# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Pure logic for app pools: names, labels, the container spec and the reconcile plan.

Nothing here talks to Docker, so the unit tests exercise it directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LABEL_STACK = "tenfold.stack"
LABEL_POOL = "tenfold.pool"
LABEL_REPLICA = "tenfold.replica"
LABEL_CONFIG = "tenfold.config-hash"
# A warm replica is named like the serving replica it will become, plus this suffix: labels cannot change,
# a name can (promotion is a rename), and `docker ps` shows which is which.
WARM_SUFFIX = "-warm"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class PoolError(ValueError):
    """A pool input that cannot be acted on; the message says what to fix."""


def check_name(kind: str, value: str) -> str:
    """Stack and pool names end up in container names, labels and paths: keep them plain."""
    if not _NAME_RE.match(value or ""):
        raise PoolError(
            f"{kind} {value!r} is not a valid name: use lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (at most 63 characters)"
        )
    return value


def parse_memory(value: str | int) -> int:
    """'512m' -> 536870912. Accepts b, k, m, g (case-insensitive, optional trailing 'b')."""
    if isinstance(value, int):
        if value <= 0:
            raise PoolError(f"memory must be positive, got {value}")
        return value
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise PoolError(f"memory {value!r} is not a size such as 512m or 1g")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 6 * 1024**2:
        raise PoolError(f"memory {value!r} is below Docker's minimum of 6m")
    return size


def replica_name(stack: str, pool: str, index: int) -> str:
    return f"{stack}-{pool}-{index}"


def warm_name(stack: str, pool: str, index: int) -> str:
    return replica_name(stack, pool, index) + WARM_SUFFIX


def warm_count(replicas: int, warm: int, max_replicas: int) -> int:
    """Warm replicas a pool of `replicas` keeps: they count toward max_replicas (so its ports and its
    resources stay bounded by it), and a pool scaled to nothing keeps none."""
    if replicas < 1:
        return 0
    return max(0, min(warm, max_replicas - replicas))


def replica_port(port_base: int, index: int) -> int:
    return port_base + index


@dataclass(frozen=True)
class PoolSpec:
    """Everything that defines a pool's containers. Its hash decides when a container is recreated."""

    stack: str
    pool: str
    image_id: str
    container_port: int
    bind_address: str
    port_base: int
    cpus: float
    memory: int
    reservation_ratio: float
    env: dict[str, str] = field(default_factory=dict)
    network: str = ""
    user: str = "10001"
    restart_policy: str = "unless-stopped"
    stop_timeout: int = 30

    def config_hash(self, index: int) -> str:
        payload = json.dumps(self.container_config(index), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def labels(self, index: int) -> dict[str, str]:
        return {
            LABEL_STACK: self.stack,
            LABEL_POOL: self.pool,
            LABEL_REPLICA: str(index),
        }

    def container_config(self, index: int, warm: bool = False) -> dict:
        """Keyword arguments for docker-py's containers.create(), minus the config-hash label.

        A warm replica differs only in its container name: promotion renames it, nothing else changes."""
        name = replica_name(self.stack, self.pool, index)
        env = {"INSTANCE_NAME": name, "POOL": self.pool, "PORT": str(self.container_port)}
        env.update({str(k): str(v) for k, v in self.env.items()})
        return {
            "image": self.image_id,
            "name": warm_name(self.stack, self.pool, index) if warm else name,
            "hostname": name,
            "labels": self.labels(index),
            "environment": env,
            "ports": {f"{self.container_port}/tcp": (self.bind_address, replica_port(self.port_base, index))},
            "network": self.network or None,
            "nano_cpus": int(self.cpus * 1e9),
            "cpu_shares": max(2, int(1024 * self.cpus * self.reservation_ratio)),
            "mem_limit": self.memory,
            "mem_reservation": int(self.memory * self.reservation_ratio),
            "memswap_limit": self.memory,
            "pids_limit": 256,
            "user": self.user,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=64m"},
            "init": True,
            "restart_policy": {"Name": self.restart_policy}
            if self.restart_policy != "on-failure"
            else {"Name": "on-failure", "MaximumRetryCount": 5},
            "stop_signal": "SIGTERM",
            "healthcheck": {
                "test": ["CMD", "/usr/local/bin/healthcheck"],
                "interval": 10 * 10**9,
                "timeout": 3 * 10**9,
                "retries": 3,
                "start_period": 5 * 10**9,
            },
            "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
        }


@dataclass(frozen=True)
class Replica:
    """A container of the pool as Docker reports it."""

    name: str
    index: int
    config_hash: str
    running: bool
    warm: bool = False


@dataclass
class Plan:
    """What to do per replica index. Indexes above `replicas` are warm slots: their creates, recreates and
    starts make warm replicas; promote renames warm replicas into serving slots, demote the reverse."""

    replicas: int = 0
    create: list[int] = field(default_factory=list)
    recreate: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    keep: list[int] = field(default_factory=list)
    promote: list[int] = field(default_factory=list)
    demote: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.create or self.recreate or self.start or self.remove or self.promote or self.demote)

    def is_warm(self, index: int) -> bool:
        return index > self.replicas

    def without_new_warm(self) -> Plan:
        """This plan less the warm replicas it would create, recreate or start (scale.yml starts them once
        the LB has the pool's new members, off the critical path)."""
        return Plan(
            replicas=self.replicas,
            create=[i for i in self.create if not self.is_warm(i)],
            recreate=[i for i in self.recreate if not self.is_warm(i)],
            start=[i for i in self.start if not self.is_warm(i)],
            remove=list(self.remove),
            keep=list(self.keep),
            promote=list(self.promote),
            demote=list(self.demote),
        )


def plan(existing: list[Replica], replicas: int, wanted_hash: dict[int, str], warm: int = 0) -> Plan:
    """Decide what to do so that replicas 1..N serve and N+1..N+warm are warm, each running the wanted
    config.

    A warm replica in a serving slot is promoted and a serving one in a warm slot demoted (renames: the
    container and its config stay). Replicas above N+warm are removed, highest index first; so are
    containers whose name or index does not match the pool's naming (stray copies), so the pool always
    converges to exactly 1..N+warm. For a slot with two candidates, the one already in the slot's state wins.
    """
    if replicas < 0 or warm < 0:
        raise PoolError(f"replicas and warm replicas must be 0 or more, got {replicas} and {warm}")
    result = Plan(replicas=replicas)
    slots = replicas + warm
    by_index: dict[int, Replica] = {}
    for replica in sorted(existing, key=lambda r: (r.index, r.warm != (r.index > replicas), r.name)):
        if 1 <= replica.index <= slots and replica.index not in by_index:
            by_index[replica.index] = replica
        else:
            result.remove.append(replica.name)
    result.remove.sort(key=lambda n: _index_of(n, existing), reverse=True)
    for index in range(1, slots + 1):
        current = by_index.get(index)
        if current is None:
            result.create.append(index)
            continue
        if current.config_hash != wanted_hash[index]:
            result.recreate.append(index)
            continue
        if current.warm and not result.is_warm(index):
            result.promote.append(index)
        elif not current.warm and result.is_warm(index):
            result.demote.append(index)
        (result.keep if current.running else result.start).append(index)
    return result


def _index_of(name: str, existing: list[Replica]) -> int:
    for replica in existing:
        if replica.name == name:
            return replica.index
    return 0


def member_at(stack: str, pool: str, port_base: int, index: int, address: str) -> dict:
    """How the load balancer reaches replica `index` of a pool (address: where its port is reachable)."""
    return {
        "name": replica_name(stack, pool, index),
        "replica": index,
        "address": address,
        "port": replica_port(port_base, index),
    }


def member(spec: PoolSpec, index: int, address: str) -> dict:
    return member_at(spec.stack, spec.pool, spec.port_base, index, address)


def probe_address(bind_address: str) -> str:
    """The address that reaches a port published on bind_address from the Docker host itself."""
    return "127.0.0.1" if bind_address in ("0.0.0.0", "") else bind_address


@dataclass
class DrainResult:
    name: str
    drained: bool
    waited_s: float
    last_inflight: int | None


def drain(
    names: list[str],
    inflight: Callable[[str], int | None],
    timeout: float,
    settle: int = 2,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[DrainResult]:
    """Wait until each replica reports no request in flight `settle` polls in a row, up to `timeout`.

    `inflight(name)` returns the replica's count, or None when it does not answer (then it serves nothing
    and counts as idle). Replicas still busy at the timeout come back with drained=False.
    """
    start = clock()
    quiet = dict.fromkeys(names, 0)
    last: dict[str, int | None] = dict.fromkeys(names)
    done: dict[str, float] = {}
    while True:
        for name in names:
            if name in done:
                continue
            count = inflight(name)
            last[name] = count
            quiet[name] = quiet[name] + 1 if not count else 0
            if quiet[name] >= settle:
                done[name] = clock() - start
        if len(done) == len(names) or clock() - start >= timeout:
            break
        sleep(interval)
    waited = clock() - start
    return [DrainResult(n, n in done, round(done.get(n, waited), 2), last[n]) for n in names]
