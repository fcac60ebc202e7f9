# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""A lost Docker host: the monitor stops the LB from sending its replicas new requests at once.

On its own the LB marks a member failing only after `max_fails` failed tries, each a connect timeout, and
a request it sends on a kept-alive connection to a host that is gone waits for its read timeout. So when
the monitor cannot reach a Docker host, it probes the pool members at that host's address; those that do
not answer `/health` either are set `draining` (a write against the generation read), and get no new
request. The scale run that follows, which leaves the host out, takes them out of the LB; a replica that
still answers (only the host's SSH or engine is down) keeps serving.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ansible_collections.tenfold.stack.plugins.module_utils.lb import Client, LbError

from tenfold_monitor.containers import health_url
from tenfold_monitor.engines import EngineHost

PROBE_TIMEOUT_S = 1.0


def host_address(host: EngineHost) -> str | None:
    """The address in the host's engine URL (ssh://user@ADDRESS:port, tcp://ADDRESS:port); None locally."""
    if not host.url or host.url.startswith("unix://"):
        return None
    return urllib.parse.urlparse(host.url).hostname


def answers(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    url = health_url(endpoint)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def drain_lost(
    lb: Client,
    pools: Iterable[str],
    addresses: Sequence[str],
    healthy: Callable[[str], bool] = answers,
) -> list[str]:
    """Set draining the active members at `addresses` that do not answer their health check; their ids."""
    drained: list[str] = []
    for pool in pools:
        try:
            generation, members, _ = lb.pool(pool)
            suspects = [m for m in members if m.state == "active" and m.address in addresses]
            if not suspects:
                continue
            with ThreadPoolExecutor(max_workers=len(suspects)) as executor:
                up = dict(zip(suspects, executor.map(lambda m: healthy(m.endpoint), suspects), strict=True))
            gone = {m.id for m, ok in up.items() if not ok}
            if gone:
                lb.replace(
                    pool, generation, [replace(m, state="draining") if m.id in gone else m for m in members]
                )
                drained += sorted(gone)
        except LbError:
            continue  # the LB unreachable, or changed meanwhile: the next tick tries again
    return drained
