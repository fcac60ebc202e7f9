# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The fast path of a scale-up: the monitor promotes warm replicas itself.

A warm replica is a rename and a member write away from serving; `scale.yml` takes seconds to get there
(ansible-playbook starting, a module process per step). So when the policy wants more replicas and the pool
has warm ones, the monitor promotes them in its own process, and keeps what a scale run guarantees:

- one actor at a time: it takes scale.yml's lock, or does nothing while a run holds it;
- the decision still holds: the pool has the serving replicas the decision was made on;
- the health gate: each warm replica answers its health endpoint right before its rename;
- the LB's members are written against the generation read (a concurrent change is refused), and a refused
  write renames the replicas back: the pool and the LB stay as they were;
- a scale event (trigger `monitor`) for the cooldown and the history, written before the lock is let go.

`scale.yml` then does the rest, in the background as before: replicas past the warm ones, and the warm
replicas' replacements.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ansible_collections.tenfold.stack.plugins.module_utils import events as tenfold_events
from ansible_collections.tenfold.stack.plugins.module_utils import lock as tenfold_lock
from ansible_collections.tenfold.stack.plugins.module_utils.lb import Client, LbError, Member
from ansible_collections.tenfold.stack.plugins.module_utils.pool import replica_name, warm_name

from tenfold_monitor.containers import (
    ENGINE_ERRORS,
    attrs_from_summary,
    health_url,
    list_summaries,
    published,
    replica_index,
)
from tenfold_monitor.engines import EngineHost, Engines
from tenfold_monitor.lbmembers import member_key

LOG = logging.getLogger("tenfold.monitor")


@dataclass(frozen=True)
class Promotion:
    pool: str
    current: int
    target: int  # serving replicas after it: current + those promoted
    promoted: tuple[str, ...]
    result: str  # "ok", "failed" (nothing changed) or "skipped" (nothing tried)
    reason: str


@dataclass(frozen=True)
class _Warm:
    index: int
    container_id: str
    address: str  # ADDRESS:PORT the LB reaches it at
    host: EngineHost  # the Docker host it runs on


class FastPath:
    def __init__(
        self,
        stack: str,
        engines: Engines,  # the Docker hosts' engines, as the collector reads them
        control_url: str,  # the LB's members API: http://127.0.0.1:<status port>
        lock_path: Path,
        events_path: Path,
        health_timeout: float = 2.0,
    ) -> None:
        self.stack = stack
        self.engines = engines
        self.lb = Client(control_url)
        self.lock_path = str(lock_path)
        self.events_path = str(events_path)
        self.health_timeout = health_timeout

    def promote(self, pool: str, current: int, wanted: int) -> Promotion:
        """Promote up to wanted - current warm replicas (the next indexes, healthy ones only)."""
        me = tenfold_lock.owner_for(os.getpid(), run=f"monitor fast path: {pool} {current} -> {wanted}")
        try:
            taken = tenfold_lock.acquire(self.lock_path, me, timeout=0)
        except tenfold_lock.LockError as exc:
            return Promotion(pool, current, current, (), "skipped", str(exc))
        start = time.time()
        try:
            outcome = self._promote(pool, current, wanted)
            if outcome.result != "skipped":
                self._record(start, outcome, taken.recovered)
            return outcome
        finally:
            tenfold_lock.release(self.lock_path, me)

    def _promote(self, pool: str, current: int, wanted: int) -> Promotion:
        serving, warm = self._replicas(pool)
        if serving is None:
            return Promotion(pool, current, current, (), "skipped", "no Docker host answered")
        if serving != current:
            reason = f"{pool}: planned at {current} replicas, the pool has {serving} now: stale, nothing done"
            return Promotion(pool, current, current, (), "skipped", reason)
        # only the next indexes, so the serving ones stay 1..N as scale.yml plans them: with a gap (a replica
        # or a Docker host lost), scale.yml fills it instead
        chosen = []
        for index in range(current + 1, wanted + 1):
            replica = warm.get(index)
            if replica is None or not self._healthy(replica.address):
                break
            chosen.append(replica)
        if not chosen:
            return Promotion(pool, current, current, (), "skipped", f"{pool}: no healthy warm replica")
        try:
            generation, members, _ = self.lb.pool(pool)
        except LbError as exc:
            return Promotion(pool, current, current, (), "skipped", str(exc))
        names = tuple(replica_name(self.stack, pool, r.index) for r in chosen)
        renamed: list[_Warm] = []
        try:
            for replica, name in zip(chosen, names, strict=True):
                self.engines.client(replica.host).api.rename(replica.container_id, name)
                renamed.append(replica)
            added = [Member(name, *self._split(r.address)) for r, name in zip(chosen, names, strict=True)]
            self.lb.replace(pool, generation, [*members, *added])
        except (LbError, *ENGINE_ERRORS) as exc:
            for replica in renamed:  # back to warm: the pool is as it was
                with contextlib.suppress(*ENGINE_ERRORS):
                    back = warm_name(self.stack, pool, replica.index)
                    self.engines.client(replica.host).api.rename(replica.container_id, back)
            reason = f"{pool}: warm replicas not promoted, the pool and the LB are as they were: {exc}"
            return Promotion(pool, current, current, (), "failed", reason)
        target = current + len(chosen)
        reason = f"{pool}: {current} -> {target} replicas: warm {', '.join(names)} promoted by the monitor"
        return Promotion(pool, current, target, names, "ok", reason)

    def _replicas(self, pool: str) -> tuple[int | None, dict[int, _Warm]]:
        """The pool's running serving replicas (a count) and its running warm ones, by index, on the Docker
        hosts that answer (the collector's view: a lost host's replicas serve nothing). None: none answers."""
        serving, warm, answered = 0, {}, False
        for host in self.engines.hosts:
            if self.engines.resting(host):
                continue
            try:
                listed = list_summaries(self.engines.client(host), self.stack, [pool])
            except (*ENGINE_ERRORS, OSError):
                self.engines.failed(host)
                continue
            answered = True
            for summary in listed:
                if summary.get("State") != "running":
                    continue
                name = ((summary.get("Names") or ["/"])[0]).lstrip("/")
                index = replica_index(summary.get("Labels") or {}) or 0
                address = member_key(published(attrs_from_summary(summary, {})))
                if name == replica_name(self.stack, pool, index):
                    serving += 1
                elif name == warm_name(self.stack, pool, index) and address:
                    warm[index] = _Warm(index, summary["Id"], address, host)
        return (serving if answered else None), warm

    def _healthy(self, address: str) -> bool:
        url = health_url(address)
        try:
            with urllib.request.urlopen(url, timeout=self.health_timeout) as response:
                return response.status == 200
        except (OSError, ValueError):
            return False

    @staticmethod
    def _split(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        return host, int(port)

    def _record(self, start: float, outcome: Promotion, recovered: Any) -> None:
        change = {
            "pool": outcome.pool,
            "current": outcome.current,
            "target": outcome.target,
            "direction": "up" if outcome.target > outcome.current else "none",
            "clamped": False,
            "message": outcome.reason,
            "reconcile": True,
        }
        request = {
            "pool": outcome.pool,
            "replicas": str(outcome.target),
            "expect_current": str(outcome.current),
            "path": "warm",  # promoted by the monitor itself, not by a scale.yml run
        }
        event = tenfold_events.event(
            start=start,
            end=time.time(),
            trigger="monitor",
            stack=self.stack,
            request=request,
            pools=[change],
            result="ok" if outcome.result == "ok" else "failed",
            failed_task=None if outcome.result == "ok" else "promote warm replicas",
            error=None if outcome.result == "ok" else outcome.reason,
            recovered_from=None if recovered is None else asdict(recovered),
        )
        try:
            tenfold_events.append(self.events_path, event)
        except OSError as exc:  # the promotion is live: say so, rather than undo it for a lost line
            logging.getLogger("tenfold.monitor").error(
                "scale event not written to %s: %s", self.events_path, exc
            )
