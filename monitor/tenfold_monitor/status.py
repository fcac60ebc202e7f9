# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Status of a tenfold stack at a glance: pools, replicas, load balancer membership and recent scale events.

Reads the Docker hosts' engines (those of the monitor's settings, logs/monitor-<stack>.json, when the
monitor role rendered them: a fleet's hosts over SSH; else the local engine or DOCKER_HOST), the LB's
members API (GET /members on its status server: which replicas are active members, which are draining, the
LB's requests in flight on each) and the scale-events log; changes nothing. Parsing, CPU arithmetic and
rendering are pure functions (tests/unit/test_status.py); Docker, HTTP and file reads stay at the bottom.

    tenfold-monitor status [--stack NAME] [--json] [--members-url URL] [--events FILE] [--settings FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import yaml
from ansible_collections.tenfold.stack.plugins.module_utils.pool import (
    LABEL_POOL,
    LABEL_REPLICA,
    LABEL_STACK,
    WARM_SUFFIX,
)

from tenfold_monitor.containers import ENGINE_ERRORS as SDK_ERRORS
from tenfold_monitor.containers import cpu_percent, memory_usage, published
from tenfold_monitor.engines import LOCAL, EngineHost, Engines, use_ssh_options
from tenfold_monitor.events import PoolChange, ScaleEvent, as_count
from tenfold_monitor.events import read as read_events
from tenfold_monitor.lbmembers import LbMember, member_key, read_members
from tenfold_monitor.lbmembers import parse_members as parse_members  # (kept as a name here)
from tenfold_monitor.service import Settings, SettingsError

ROOT = Path(".")  # the checkout: its local inventory and the monitor settings rendered in logs/
DEFAULT_STACK = "tenfold"
DEFAULT_STATUS_PORT = 8081  # nginx_lb_status_port's default
NOT_IN_LB = "absent"  # Replica.lb_state of a replica the LB does not list
KNOWN_POOLS = ("frontend", "backend")
RECENT_EVENTS = 5
STATS_WORKERS = 32


# --- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replica:
    name: str
    pool: str
    index: int
    state: str
    health: str
    address: str | None
    cpu_percent: float | None = None
    memory_used: int | None = None
    memory_limit: int | None = None
    # The LB's view (None: membership unknown). in_lb: an active member, one the LB sends new requests to.
    in_lb: bool | None = None
    lb_state: str | None = None  # "active", "draining" (no new requests, finishing its own) or NOT_IN_LB
    lb_inflight: int | None = None  # requests the LB has in flight on it (None when it is no member)
    lb_failing: bool | None = None  # passively marked failed: the LB rests it for fail_timeout
    host: str = LOCAL  # the Docker host it runs on (the settings' name of it)

    @property
    def warm(self) -> bool:
        """Kept started out of the LB for a scale-up to promote: not part of the pool's size."""
        return self.name.endswith(WARM_SUFFIX)


@dataclass(frozen=True)
class PoolStatus:
    pool: str
    wanted: int
    wanted_from: str  # "event" (the last successful scale run) or "containers" (no such run yet)
    running: int
    healthy: int
    in_lb: int | None  # the pool's active LB members
    warm: int = 0  # warm replicas running and healthy, out of the LB


@dataclass(frozen=True)
class LoadBalancer:
    name: str
    state: str
    health: str


@dataclass(frozen=True)
class StackStatus:
    stack: str
    generated_at: str
    members_url: str
    members_known: bool  # the members API answered
    lb: LoadBalancer | None
    pools: list[PoolStatus]
    replicas: list[Replica]
    events: list[ScaleEvent]
    members_without_container: dict[str, list[str]] = field(default_factory=dict)
    docker_hosts: list[str] = field(default_factory=lambda: [LOCAL])  # the hosts read, in order
    unreachable_hosts: dict[str, str] = field(default_factory=dict)  # host -> why it was not read


# --- scale events (pure; parsed by tenfold_monitor.events) -----------------------------------------
def wanted_from_events(events: list[ScaleEvent]) -> dict[str, int]:
    """Per pool, the target of the last successful scale run that touched it."""
    wanted: dict[str, int] = {}
    for event in events:
        if event.result == "ok":
            wanted.update({change.pool: change.target for change in event.pools})
    return wanted


# --- combining (pure) -----------------------------------------------------------------------------
Members = dict[str, list[LbMember]]  # pool -> the LB's members of it, as lbmembers.read_members gives them


def member_of(replica: Replica, members: Members) -> LbMember | None:
    """The LB member that is this replica: the one at its published address (a wildcard bind on 127.0.0.1)."""
    key = member_key(replica.address)
    return next((m for m in members.get(replica.pool, []) if m.endpoint == key), None) if key else None


def with_membership(replicas: list[Replica], members: Members | None) -> list[Replica]:
    if members is None:
        return replicas
    out = []
    for replica in replicas:
        member = member_of(replica, members)
        if member is None:
            out.append(replace(replica, in_lb=False, lb_state=NOT_IN_LB))
            continue
        out.append(
            replace(
                replica,
                in_lb=member.serving,
                lb_state=member.state,
                lb_inflight=member.inflight,
                lb_failing=member.failing,
            )
        )
    return out


def ordered_pools(names: Iterable[str]) -> list[str]:
    unique = set(names)
    return [p for p in KNOWN_POOLS if p in unique] + sorted(unique - set(KNOWN_POOLS))


def pool_statuses(
    replicas: list[Replica], wanted: dict[str, int], members: Members | None
) -> list[PoolStatus]:
    out = []
    for pool in ordered_pools([r.pool for r in replicas] + list(wanted)):
        mine = [r for r in replicas if r.pool == pool and not r.warm]
        ready = [r for r in replicas if r.pool == pool and r.state == "running" and r.health == "healthy"]
        out.append(
            PoolStatus(
                pool=pool,
                wanted=wanted.get(pool, len(mine)),
                wanted_from="event" if pool in wanted else "containers",
                running=sum(r.state == "running" for r in mine),
                healthy=sum(not r.warm for r in ready),
                in_lb=None if members is None else sum(m.serving for m in members.get(pool, [])),
                warm=sum(r.warm for r in ready),
            )
        )
    return out


def strays(replicas: list[Replica], members: Members | None) -> dict[str, list[str]]:
    """ADDRESS:PORT of each pool's LB members, active or draining, that no container of the stack publishes
    (a replica removed behind the LB's back, say)."""
    if members is None:
        return {}
    known = {member_key(r.address) for r in replicas}
    found = {pool: sorted({m.endpoint for m in listed} - known) for pool, listed in members.items()}
    return {pool: addrs for pool, addrs in found.items() if addrs}


# --- rendering (pure) -----------------------------------------------------------------------------
def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            text = f"{size:.1f}".removesuffix(".0")
            return f"{text} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def short_time(iso: str) -> str:
    """2026-11-27T12:00:22.123Z -> 2026-11-27 12:00:22Z"""
    if not iso:
        return "?"
    text = iso.replace("T", " ")
    return re.sub(r"\.\d+", "", text)


def columns(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Rows aligned under their headers; columns whose index is in `right` are right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def pools_table(pools: list[PoolStatus]) -> list[str]:
    rows = [
        [
            p.pool,
            f"{p.wanted}{'' if p.wanted_from == 'event' else '*'}",
            str(p.running),
            str(p.healthy),
            "?" if p.in_lb is None else str(p.in_lb),
            str(p.warm),
        ]
        for p in pools
    ]
    headers = ["POOL", "WANTED", "RUNNING", "HEALTHY", "IN LB", "WARM"]
    return columns(headers, rows, frozenset({1, 2, 3, 4, 5}))


def lb_cells(replica: Replica) -> list[str]:
    """IN LB (active, draining, no, warm; ? unknown) and LB INFLIGHT (- when no member) of a replica."""
    if replica.lb_state is None:
        return ["?", "?"]
    if replica.lb_state == NOT_IN_LB:
        return ["warm" if replica.warm else "no", "-"]
    return [replica.lb_state, "?" if replica.lb_inflight is None else str(replica.lb_inflight)]


def replicas_table(replicas: list[Replica], hosts: bool = False) -> list[str]:
    """One row a replica; with `hosts` (a stack on several Docker hosts) a HOST column after the name."""
    rows = []
    for r in replicas:
        used, limit = human_bytes(r.memory_used), human_bytes(r.memory_limit)
        memory = "-" if r.memory_used is None else f"{used} / {limit}"
        cpu = "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}"
        rows.append([r.name, *([r.host] if hosts else []), r.state, r.health, cpu, memory, r.address or "-"])
        rows[-1] += lb_cells(r)
    headers = ["REPLICA", *(["HOST"] if hosts else []), "STATE", "HEALTH", "CPU %", "MEMORY", "ADDRESS"]
    shift = int(hosts)
    return columns([*headers, "IN LB", "LB INFLIGHT"], rows, frozenset({3 + shift, 7 + shift}))


def shown_changes(event: ScaleEvent) -> list[PoolChange]:
    """The pools an event changed; when it changed none, the pools it was asked about."""
    changed = [c for c in event.pools if c.current != c.target]
    return changed or [c for c in event.pools if event.requested_pool in (None, c.pool)]


def events_table(events: list[ScaleEvent]) -> list[str]:
    rows = []
    for e in events:
        changes = ", ".join(f"{c.pool} {c.current}->{c.target}" for c in shown_changes(e)) or "-"
        duration = "-" if e.duration_s is None else f"{e.duration_s:.1f} s"
        result = e.result if e.result == "ok" else f"{e.result}: {e.failed_task or e.error or '?'}"
        rows.append([short_time(e.start), e.trigger, changes, duration, result])
    return columns(["TIME (UTC)", "TRIGGER", "POOLS", "DURATION", "RESULT"], rows, frozenset({3}))


def render_table(status: StackStatus) -> str:
    lines = [f"tenfold stack {status.stack!r}  ({short_time(status.generated_at)})", ""]
    for host, reason in status.unreachable_hosts.items():
        lines.append(f"! Docker host {host} did not answer, its replicas are not shown: {reason}")
    if status.unreachable_hosts:
        lines.append("")
    if status.lb is None and not status.replicas:
        lines.append(f"No containers of stack {status.stack!r} (label {LABEL_STACK}={status.stack}).")
    else:
        lb = status.lb
        lb_text = f"{lb.name}  {lb.state}  {lb.health}" if lb else f"{status.stack}-lb  not found"
        lines += [f"Load balancer: {lb_text}", ""]
        if not status.members_known:
            lines += [f"LB members unknown: no readable answer from {status.members_url} (?).", ""]
        lines += pools_table(status.pools) if status.pools else ["No app containers."]
        if any(p.wanted_from == "containers" for p in status.pools):
            lines.append("* no successful scale run recorded: wanted = containers found")
        for pool, addrs in status.members_without_container.items():
            lines.append(f"! {pool}: the LB lists {', '.join(addrs)}, which no container publishes")
        for r in status.replicas:
            if r.lb_failing:
                lines.append(f"! {r.name}: failing, the LB rests it (no new requests until fail_timeout)")
        if status.replicas:
            lines += ["", *replicas_table(status.replicas, hosts=len(status.docker_hosts) > 1)]
    lines += ["", f"Last {RECENT_EVENTS} scale events:"]
    lines += events_table(status.events) if status.events else ["  none recorded"]
    return "\n".join(lines) + "\n"


def render_json(status: StackStatus) -> str:
    return json.dumps(asdict(status), indent=2) + "\n"


# --- I/O: files -----------------------------------------------------------------------------------
def inventory_vars(root: Path = ROOT) -> dict[str, Any]:
    """The local inventory's group_vars/all.yml; {} when it cannot be read."""
    try:
        values = yaml.safe_load((root / "inventories/local/group_vars/all.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def default_stack(root: Path = ROOT) -> str:
    """$TENFOLD_STACK, else tenfold_stack of the local inventory, else tenfold."""
    if os.environ.get("TENFOLD_STACK"):
        return os.environ["TENFOLD_STACK"]
    name = inventory_vars(root).get("tenfold_stack")
    return str(name) if name else DEFAULT_STACK


def default_members_url(root: Path = ROOT) -> str:
    """The members API on the status port of the local inventory (nginx_lb_status_port, else 8081).

    The port is the inventory's, not the stack's: the LB of a stack that listens elsewhere (a test
    stack, say) is named with --members-url.
    """
    port = as_count(inventory_vars(root).get("nginx_lb_status_port"))
    return f"http://127.0.0.1:{port or DEFAULT_STATUS_PORT}/members"


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# --- I/O: Docker --------------------------------------------------------------------------------
class EngineUnreachable(RuntimeError):
    """No Docker engine of the stack answered."""


ENGINE_ERRORS = (*SDK_ERRORS, OSError)  # OSError: the ssh process of a remote engine's connection


def health_of(attrs: dict) -> str:
    return ((attrs.get("State") or {}).get("Health") or {}).get("Status") or "-"


def sample_of(container: Any) -> dict | None:
    try:
        return container.stats(stream=False)
    except ENGINE_ERRORS:
        return None  # gone since it was listed, say


def replica_of(container: Any, sample: dict | None, host: str = LOCAL) -> Replica:
    attrs, labels = container.attrs, container.labels
    index = as_count(labels.get(LABEL_REPLICA))
    memory = memory_usage(sample) if sample else None
    return Replica(
        name=container.name,
        pool=labels.get(LABEL_POOL, "?"),
        index=index if index is not None else 0,
        state=(attrs.get("State") or {}).get("Status", "?"),
        health=health_of(attrs),
        address=published(attrs),
        cpu_percent=cpu_percent(sample) if sample else None,
        memory_used=memory[0] if memory else None,
        memory_limit=memory[1] if memory else None,
        host=host,
    )


def load_replicas(client: docker.DockerClient, stack: str, host: str = LOCAL) -> list[Replica]:
    """The stack's app containers on one engine, a stats sample each (a second each, so in parallel)."""
    containers = client.containers.list(
        all=True, filters={"label": [f"{LABEL_STACK}={stack}", LABEL_POOL]}, ignore_removed=True
    )  # a replica removed by a scale-down between the listing and its inspect is left out
    running = [c for c in containers if c.status == "running"]
    samples: dict[str, dict | None] = {}
    if running:
        with ThreadPoolExecutor(max_workers=min(STATS_WORKERS, len(running))) as pool:
            samples = dict(zip([c.id for c in running], pool.map(sample_of, running), strict=True))
    return [replica_of(c, samples.get(c.id), host) for c in containers]


def load_lb(stack: str) -> LoadBalancer | None:
    """The LB container on this host's engine (the LB host's, where its members API answers too)."""
    try:
        container = docker.from_env().containers.get(f"{stack}-lb")
    except ENGINE_ERRORS:
        return None
    return LoadBalancer(container.name, container.attrs["State"]["Status"], health_of(container.attrs))


def read_hosts(engines: Engines, stack: str) -> tuple[list[Replica], dict[str, str]]:
    """Every Docker host's replicas, the hosts in parallel; a host that fails is named with its error."""

    def read(host: EngineHost) -> list[Replica]:
        return load_replicas(engines.client(host), stack, host.name)

    replicas: list[Replica] = []
    unreachable: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(engines.hosts)) as pool:
        futures = [(host, pool.submit(read, host)) for host in engines.hosts]
    for host, future in futures:
        try:
            replicas += future.result()
        except ENGINE_ERRORS as exc:
            unreachable[host.name] = str(exc).strip() or type(exc).__name__
    order = {pool: i for i, pool in enumerate(ordered_pools(r.pool for r in replicas))}
    return sorted(replicas, key=lambda r: (order[r.pool], r.index, r.name)), unreachable


def collect(engines: Engines, stack: str, members_url: str, events_path: Path) -> StackStatus:
    replicas, unreachable = read_hosts(engines, stack)
    if len(unreachable) == len(engines.hosts):
        raise EngineUnreachable("; ".join(f"{host}: {why}" for host, why in unreachable.items()))
    # The newest rotated copy first (roles/monitor's logrotate config keeps it uncompressed), then the file.
    rotated = events_path.with_name(events_path.name + ".1")
    text = "\n".join(read_text(path) or "" for path in (rotated, events_path))
    events = read_events(text.splitlines(), stack)
    wanted = wanted_from_events(events)
    members = read_members(members_url)
    return StackStatus(
        stack=stack,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        members_url=members_url,
        members_known=members is not None,
        lb=load_lb(stack),
        pools=pool_statuses(replicas, wanted, members),
        replicas=with_membership(replicas, members),
        events=events[-RECENT_EVENTS:],
        members_without_container=strays(replicas, members),
        docker_hosts=[host.name for host in engines.hosts],
        unreachable_hosts=unreachable,
    )


# --- command line -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tenfold-monitor status", description="Show a tenfold stack: pools, replicas, LB membership."
    )
    parser.add_argument("--stack", help="stack name (default: $TENFOLD_STACK, else the local inventory's)")
    parser.add_argument("--json", action="store_true", help="print the same data as JSON")
    parser.add_argument(
        "--members-url",
        help="the LB's members API (default http://127.0.0.1:PORT/members, PORT the local inventory's "
        f"nginx_lb_status_port, else {DEFAULT_STATUS_PORT})",
    )
    parser.add_argument(
        "--events",
        type=Path,
        help="scale events (default the stack's here: the settings' state_dir, else "
        "/var/lib/tenfold/<stack>/scale/scale-events.jsonl)",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        help="the monitor's settings: the Docker hosts to read and how (default logs/monitor-<stack>.json "
        "when it exists, else the local engine)",
    )
    return parser.parse_args(argv)


def monitor_settings(path: Path | None, stack: str, root: Path = ROOT) -> Settings:
    """The monitor's settings (the role renders them from the inventory); the defaults when there are none."""
    default = root / "logs" / f"monitor-{stack}.json"
    if path is None and not default.exists():
        return Settings(stack=stack)
    return Settings.load(path or default)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = args.stack or default_stack()
    members_url = args.members_url or default_members_url()
    try:
        settings = monitor_settings(args.settings, stack)
    except (OSError, SettingsError) as exc:
        print(f"tenfold-monitor status: the monitor's settings cannot be used: {exc}", file=sys.stderr)
        return 2
    use_ssh_options(settings.ssh_options)
    engines = Engines(settings.engine_hosts(), max_pool_size=STATS_WORKERS)
    try:
        events = args.events or settings.events_log()
        status = collect(engines, stack, members_url, events)
    except EngineUnreachable as exc:
        reason = f"cannot reach the Docker engine ({exc})"
        print(f"tenfold-monitor status: {reason}. Is it running, and may this user use it?", file=sys.stderr)
        return 1
    finally:
        engines.close()
    sys.stdout.write(render_json(status) if args.json else render_table(status))
    return 0
