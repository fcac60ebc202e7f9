# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The LB's members, as nginx itself holds them: GET http://127.0.0.1:<status port>/members (or /status,
which lists them the same way beside the counters).

{"pools": {"backend": {"pool": "backend", "generation": 7, "members": [
    {"id": "tenfold-backend-1", "address": "127.0.0.1", "port": 18201, "state": "active",
     "inflight": 2, "failing": false}, ...]}, ...}}

Membership is data inside nginx (Lua), not a file on disk: the status server's answer is the only view of
it. An answer that cannot be had or read is "membership unknown" (None), never "no members": a scaler must
not take an LB it cannot see for an empty one. Parsing is pure (`parse_members`); only `read_members` does
I/O. Shared with tenfold_monitor.status, which imports these names.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8081/members"
TIMEOUT_S = 1.0  # the status server is on this host: an LB that takes longer is in trouble, not slow
MAX_BYTES = 1 << 20  # a member is about 130 bytes: room for thousands
STATES = frozenset({"active", "draining"})


@dataclass(frozen=True)
class LbMember:
    id: str  # the replica's container name
    address: str  # how the LB reaches the replica: its published address (127.0.0.1 for a wildcard bind)
    port: int
    state: str  # "active": gets new requests; "draining": gets none, finishing the ones in flight
    inflight: int  # requests the LB has in flight on it
    failing: bool  # passively marked failed: the LB rests it for fail_timeout

    @property
    def endpoint(self) -> str:
        """ADDRESS:PORT, as `member_key` gives a container's published address."""
        return f"{self.address}:{self.port}"

    @property
    def serving(self) -> bool:
        """A member the LB sends new requests to (a failing one still is, once its rest is over)."""
        return self.state == "active"


def member_key(address: str | None) -> str | None:
    """How the LB on this host reaches a published address: a wildcard bind is reached on 127.0.0.1."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "", "::", "[::]") else address


def active_endpoints(members: Iterable[LbMember]) -> set[str]:
    """ADDRESS:PORT of the members that get new requests."""
    return {m.endpoint for m in members if m.serving}


def endpoints(members: Iterable[LbMember]) -> set[str]:
    """ADDRESS:PORT of every member, draining ones included: the replicas the LB knows of."""
    return {m.endpoint for m in members}


def _whole(value: Any) -> int | None:
    """A JSON number that is a whole number (cjson may write one as 2.0); bool is not a number here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _member(raw: Any) -> LbMember | None:
    if not isinstance(raw, dict):
        return None
    port, inflight = _whole(raw.get("port")), _whole(raw.get("inflight"))
    ident, address, state, failing = raw.get("id"), raw.get("address"), raw.get("state"), raw.get("failing")
    if not (isinstance(ident, str) and ident and isinstance(address, str) and address):
        return None
    if port is None or not 0 < port < 65536 or inflight is None or state not in STATES:
        return None
    if not isinstance(failing, bool):
        return None
    # The LB decrements its counter and puts it back to 0 should it go below: a reader can see -1 between.
    return LbMember(ident, address, port, state, max(0, inflight), failing)


def _pool(name: str, raw: Any) -> list[LbMember] | None:
    if not isinstance(raw, dict) or raw.get("pool", name) != name or not isinstance(raw.get("members"), list):
        return None
    members = [_member(m) for m in raw["members"]]
    return None if any(m is None for m in members) else [m for m in members if m is not None]


def parse_members(text: str | bytes) -> dict[str, list[LbMember]] | None:
    """Each pool's members from the text of GET /members; None when it is not such an answer.

    One malformed member makes the whole answer unknown: a partial list would undercount the serving
    replicas and count the rest as running outside the LB.
    """
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # ValueError covers bytes that are not UTF-8 too
        return None
    pools = raw.get("pools") if isinstance(raw, dict) else None
    if not isinstance(pools, dict):
        return None
    parsed = {name: _pool(name, value) for name, value in pools.items()}
    if any(members is None for members in parsed.values()):
        return None
    return {name: members for name, members in parsed.items() if members is not None}


def fetch(url: str, timeout: float = TIMEOUT_S) -> bytes:
    """The body of a 200 answer at `url`; OSError when the LB does not answer or answers otherwise.

    A 4xx/5xx answer raises urllib's HTTPError, an OSError; a broken answer, http.client's HTTPException.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response:
        if response.status != 200:
            raise OSError(f"{url} answered {response.status}")
        return response.read(MAX_BYTES)


def read_members(url: str = DEFAULT_URL, timeout: float = TIMEOUT_S) -> dict[str, list[LbMember]] | None:
    """Each pool's members as the LB at `url` holds them now; None when unknown (no answer, or a bad one)."""
    try:
        body = fetch(url, timeout)
    except (OSError, http.client.HTTPException, ValueError):  # ValueError: not a URL urllib can open
        return None
    return parse_members(body)
