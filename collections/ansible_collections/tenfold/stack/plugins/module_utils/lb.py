# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The LB's members API (the nginx_lb role's status server, on 127.0.0.1 of the LB host).

Members are data inside nginx, not configuration: GET /members/<pool> reads a pool's generation and members
(with the requests each has in flight), PUT /members/<pool> replaces them if the pool is still at the
generation the write names. The LB checks every field again and refuses a bad write with its reason.
The pure part (checking, planning, describing) is separate from the HTTP client, for the unit tests.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATES = ("active", "draining")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class LbError(Exception):
    """The LB could not be read or refused a change; the message says why and what is live."""


@dataclass(frozen=True)
class Member:
    id: str
    address: str
    port: int
    state: str = "active"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address, "port": self.port, "state": self.state}

    def line(self) -> str:
        return f"{self.id} {self.endpoint} {self.state}"


# --- pure parts -----------------------------------------------------------------------------------
def check_member(raw: Any, where: str, state: str = "active") -> Member:
    """A member as given to a module ({id or name, address, port}); a bad field fails naming `where`."""
    if not isinstance(raw, Mapping):
        raise LbError(f"{where}: {raw!r} must be a mapping with id (or name), address and port")
    ident = raw.get("id", raw.get("name"))
    if not isinstance(ident, str) or not _ID_RE.match(ident):
        raise LbError(f"{where}: id {ident!r} must be 1-63 letters, digits, '.', '_' or '-'")
    address = raw.get("address")
    if not isinstance(address, str) or not (_is_ipv4(address) or _HOST_RE.match(address)):
        raise LbError(f"{where}: address {address!r} of {ident} must be an IPv4 address or a host name")
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, (int, str)) or not str(port).isdigit():
        raise LbError(f"{where}: port {port!r} of {ident} must be a whole number from 1 to 65535")
    if not 1 <= int(port) <= 65535:
        raise LbError(f"{where}: port {port!r} of {ident} must be a whole number from 1 to 65535")
    if state not in STATES:
        raise LbError(f"{where}: state {state!r} of {ident} must be one of {', '.join(STATES)}")
    return Member(ident, address, int(port), state)


def _is_ipv4(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False


def plan(pool: str, active: Iterable[Any], draining: Iterable[Any] = ()) -> list[Member]:
    """The members a pool is to have: `active` ones active and `draining` ones draining, each id once."""
    wanted: dict[str, Member] = {}
    for i, raw in enumerate(active):
        member = check_member(raw, f"{pool}[{i}]")
        wanted[member.id] = member
    for i, raw in enumerate(draining):
        member = check_member(raw, f"{pool} draining[{i}]", state="draining")
        wanted[member.id] = member
    endpoints = [m.endpoint for m in wanted.values()]
    twice = sorted({e for e in endpoints if endpoints.count(e) > 1})
    if twice:
        raise LbError(f"{pool}: more than one member at {', '.join(twice)}")
    return list(wanted.values())


def same(current: Iterable[Member], wanted: Iterable[Member]) -> bool:
    """Whether two member sets are equal (the order does not matter to the balancer)."""
    return sorted(current, key=lambda m: m.id) == sorted(wanted, key=lambda m: m.id)


def describe(members: Iterable[Member]) -> str:
    return "".join(f"{m.line()}\n" for m in sorted(members, key=lambda m: m.id))


def parse_pool(body: Any) -> tuple[int, list[Member], dict[str, int]]:
    """GET /members/<pool>'s answer: its generation, its members, and each member's requests in flight."""
    try:
        generation = int(body["generation"])
        listed = body["members"]
        members = [Member(m["id"], m["address"], int(m["port"]), m["state"]) for m in listed]
        inflight = {m["id"]: int(m.get("inflight", 0)) for m in listed}
    except (KeyError, TypeError, ValueError) as exc:
        raise LbError(f"the LB's answer is not a pool's members: {body!r:.200}") from exc
    return generation, members, inflight


# --- I/O --------------------------------------------------------------------------------------------
def resolve(member: Member) -> Member:
    """The member with its address as an IPv4 address: the balancer connects to addresses, not names."""
    if _is_ipv4(member.address):
        return member
    try:
        found = socket.getaddrinfo(member.address, member.port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise LbError(f"{member.id}: cannot resolve {member.address} ({exc})") from exc
    return Member(member.id, found[0][4][0], member.port, member.state)


class Client:
    """The members API of the LB at `url` (http://127.0.0.1:<status port>). No proxy is ever used."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                reason = exc.reason
            raise LbError(f"the LB answered {method} {path} with {exc.code}: {reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise LbError(
                f"the LB's members API at {self.url} did not answer {method} {path} ({exc}): is the LB "
                "running? site.yml starts it"
            ) from exc

    def pool(self, pool: str) -> tuple[int, list[Member], dict[str, int]]:
        return parse_pool(self._call("GET", f"/members/{pool}"))

    def replace(self, pool: str, generation: int, members: list[Member]) -> int:
        """Replace the pool's members if it is still at `generation`; the new generation."""
        body = {"generation": generation, "members": [m.as_dict() for m in members]}
        answer = self._call("PUT", f"/members/{pool}", body)
        return int(answer["generation"])
