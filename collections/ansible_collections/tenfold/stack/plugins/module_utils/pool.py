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


def placed_here(index: int, hosts: int = 1, host_index: int = 0) -> bool:
    """A pool spread over `hosts` Docker hosts runs replica i on host (i - 1) mod hosts (in inventory order):
    names and ports stay unique across the hosts, and a scale run never moves a replica to another host."""
    return (index - 1) % hosts == host_index


def check_placement(hosts: int, host_index: int) -> None:
    if hosts < 1 or not 0 <= host_index < hosts:
        raise PoolError(
            f"host_index must be within 0..hosts-1 and hosts 1 or more, got {host_index} of {hosts}"
        )


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


# What a diff says about a recreated replica: the fields of container_config() it compares, in this order,
# with the words a person reads. The name is not among them (promotion and demotion are renames), nor are
# the environment's values: they may be secrets, so only its keys are ever named.
_FIELD_WORDS = {
    "image": "image",
    "hostname": "hostname",
    "labels": "label",
    "ports": "ports",
    "network": "network",
    "nano_cpus": "cpus",
    "cpu_shares": "cpu shares",
    "mem_limit": "memory limit",
    "mem_reservation": "memory reservation",
    "memswap_limit": "memory+swap limit",
    "pids_limit": "pids limit",
    "user": "user",
    "cap_drop": "dropped capabilities",
    "security_opt": "security options",
    "read_only": "read-only root filesystem",
    "tmpfs": "tmpfs",
    "init": "init",
    "restart_policy": "restart policy",
    "stop_signal": "stop signal",
    "healthcheck": "healthcheck",
    "log_config": "logging",
}
_SIZE_FIELDS = ("mem_limit", "mem_reservation", "memswap_limit")
_NANOSECOND_KEYS = ("interval", "timeout", "start_period")


def normal_config(config: dict) -> dict:
    """A container config (container_config()'s shape, or one read back from the engine) in one form, so
    that equal settings compare equal: Docker's defaults filled in, ports as (address, port)."""
    result = dict(config)
    network = result.get("network")
    result["network"] = None if network in (None, "", "default", "bridge") else network
    policy = dict(result.get("restart_policy") or {"Name": "no"})
    policy.setdefault("MaximumRetryCount", 0)
    policy["Name"] = policy.get("Name") or "no"
    result["restart_policy"] = policy
    result["ports"] = {key: (str(bind[0]), int(bind[1])) for key, bind in (result.get("ports") or {}).items()}
    result["environment"] = {str(k): str(v) for k, v in (result.get("environment") or {}).items()}
    return result


def config_changes(before: dict, after: dict) -> list[str]:
    """What differs between an existing replica's config and the wanted one, a line per field.

    Both are in container_config()'s shape. Environment variables are named by key (added, removed,
    changed), never with their values; labels only for the keys `after` sets (an image adds its own)."""
    old, new = normal_config(before), normal_config(after)
    lines: list[str] = []
    for key, words in _FIELD_WORDS.items():
        if key == "labels":
            lines += _label_changes(old.get(key) or {}, new.get(key) or {})
        elif key == "healthcheck":
            lines += _healthcheck_changes(old.get(key) or {}, new.get(key) or {})
        elif old.get(key) != new.get(key):
            lines.append(f"{words}: {_show(key, old.get(key))} -> {_show(key, new.get(key))}")
    return lines + env_changes(old["environment"], new["environment"])


def env_changes(before: dict, after: dict) -> list[str]:
    """The environment's keys that were added, removed or changed. Never a value: they may be secrets."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(key for key in set(before) & set(after) if before[key] != after[key])
    lines = []
    for words, keys in (("added", added), ("removed", removed), ("changed", changed)):
        if keys:
            lines.append(f"env {words}: {', '.join(keys)}")
    return lines


def _label_changes(before: dict, after: dict) -> list[str]:
    return [
        f"label {key}: {before.get(key, '(none)')} -> {value}"
        for key, value in sorted(after.items())
        if key != LABEL_CONFIG and before.get(key) != value
    ]


def _healthcheck_changes(before: dict, after: dict) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            old, new = before.get(key), after.get(key)
            if key in _NANOSECOND_KEYS:
                old, new = _seconds(old), _seconds(new)
            else:
                old, new = _show(key, old), _show(key, new)
            lines.append(f"healthcheck {key}: {old} -> {new}")
    return lines


def _seconds(nanoseconds: object) -> str:
    return f"{nanoseconds / 1e9:g}s" if isinstance(nanoseconds, int) else "(none)"


def _show(key: str, value: object) -> str:
    if value is None:
        return "(none)"
    if key == "image" and isinstance(value, str):
        return value.removeprefix("sha256:")[:12]
    if key == "nano_cpus" and isinstance(value, int):
        return f"{value / 1e9:g}"
    if key in _SIZE_FIELDS and isinstance(value, int):
        return show_size(value)
    if key == "ports" and isinstance(value, dict):
        return ", ".join(f"{port} on {bind[0]}:{bind[1]}" for port, bind in sorted(value.items())) or "(none)"
    if key == "restart_policy" and isinstance(value, dict):
        retries = value.get("MaximumRetryCount") or 0
        return f"{value.get('Name')} (at most {retries} restarts)" if retries else str(value.get("Name"))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def show_size(size: int) -> str:
    """536870912 -> '512m': the largest unit that divides it (parse_memory's units)."""
    if size <= 0:
        return str(size)
    for unit in ("g", "m", "k"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}b"


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


def plan(
    existing: list[Replica],
    replicas: int,
    wanted_hash: dict[int, str],
    warm: int = 0,
    hosts: int = 1,
    host_index: int = 0,
) -> Plan:
    """Decide what to do so that replicas 1..N serve and N+1..N+warm are warm, each running the wanted
    config. Of a pool spread over several hosts, this host runs the slots placed_here() gives it.

    A warm replica in a serving slot is promoted and a serving one in a warm slot demoted (renames: the
    container and its config stay). Replicas above N+warm are removed, highest index first; so are
    containers whose name or index does not match the pool's naming (stray copies), so the pool always
    converges to exactly 1..N+warm. For a slot with two candidates, the one already in the slot's state wins.
    """
    if replicas < 0 or warm < 0:
        raise PoolError(f"replicas and warm replicas must be 0 or more, got {replicas} and {warm}")
    check_placement(hosts, host_index)
    result = Plan(replicas=replicas)
    slots = [i for i in range(1, replicas + warm + 1) if placed_here(i, hosts, host_index)]
    by_index: dict[int, Replica] = {}
    for replica in sorted(existing, key=lambda r: (r.index, r.warm != (r.index > replicas), r.name)):
        if replica.index in slots and replica.index not in by_index:
            by_index[replica.index] = replica
        else:
            result.remove.append(replica.name)
    result.remove.sort(key=lambda n: _index_of(n, existing), reverse=True)
    for index in slots:
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


def plan_report(
    todo: Plan, stack: str, pool: str, current: dict[int, str], changes: dict[int, list[str]]
) -> list[str]:
    """What a plan does to each replica, a line each, in the order it is carried out (indented lines under
    a recreated replica say what differs: `changes`, from config_changes()).

    `current` names each slot's existing container (the one the plan kept for it)."""

    def name(index: int) -> str:
        return warm_name(stack, pool, index) if todo.is_warm(index) else replica_name(stack, pool, index)

    def was(index: int) -> str:
        old = current.get(index, name(index))
        return "" if old == name(index) else f" (was {old})"

    lines = [f"{removed}: removed" for removed in todo.remove]
    lines += [
        f"{current.get(i, replica_name(stack, pool, i))}: demoted to {name(i)} (warm)" for i in todo.demote
    ]
    for index in todo.promote:
        started = " (started first)" if index in todo.start else ""
        lines.append(
            f"{current.get(index, warm_name(stack, pool, index))}: promoted to {name(index)}{started}"
        )
    lines += [f"{name(i)}: started" for i in todo.start if i not in todo.promote]
    for index in todo.recreate:
        warm = " as a warm replica" if todo.is_warm(index) else ""
        lines.append(f"{name(index)}: recreated{warm}{was(index)}")
        lines += [
            f"  {line}" for line in changes.get(index) or ["config hash differs, no compared setting does"]
        ]
    lines += [f"{name(i)}: created" + (" (warm)" if todo.is_warm(i) else "") for i in todo.create]
    return lines


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
