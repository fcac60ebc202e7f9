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
from dataclasses import asdict, dataclass
from typing import Any

from ansible_collections.tenfold.stack.plugins.module_utils.pool import drain

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


def get_json(url: str, timeout: float = 1.0) -> dict | None:
    """The JSON body of a 200 answer (a replica's /health, say), or None when it does not answer so."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            if response.status != 200:
                return None
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


# --- the modules lb_members and drain: their module and their action plugin (in the ansible-playbook
# process when the LB host is this machine) share these specs and bodies --------------------------
MEMBERS_SPEC: dict[str, dict[str, Any]] = {
    "url": {"type": "str", "default": "http://127.0.0.1:8081"},
    "pools": {"type": "dict", "required": True},
    "draining": {"type": "dict", "default": {}},
    "timeout": {"type": "float", "default": 5.0},
}

DRAIN_SPEC: dict[str, dict[str, Any]] = {
    "members": {"type": "list", "elements": "dict", "required": True},
    "health_path": {"type": "str", "default": "/health"},
    "lb_url": {"type": "str"},
    "pool": {"type": "str"},
    "timeout": {"type": "int", "default": 30},
    "settle": {"type": "int", "default": 2},
    "interval": {"type": "float", "default": 0.1},
}


def wanted_members(params: Mapping[str, Any]) -> dict[str, list[Member]]:
    """Each pool's members, checked and resolved, before anything is read or written."""
    unknown = sorted(set(params["draining"]) - set(params["pools"]))
    if unknown:
        raise LbError(f"draining names pools that pools does not: {', '.join(unknown)}")
    wanted = {}
    for pool, active in params["pools"].items():
        if not isinstance(active, list) or not isinstance(params["draining"].get(pool, []), list):
            raise LbError(f"{pool}: the members must be a list")
        wanted[pool] = [resolve(m) for m in plan(pool, active, params["draining"].get(pool, []))]
    return wanted


def set_members(params: Mapping[str, Any], check_mode: bool, diff: bool) -> dict:
    """tenfold.stack.lb_members: make each pool named have the members given (LbError: nothing written
    to the pool that failed, and the message names the pools written before it)."""
    wanted = wanted_members(params)
    client = Client(params["url"], params["timeout"])
    current = {pool: client.pool(pool) for pool in wanted}
    changed = [pool for pool in wanted if not same(current[pool][1], wanted[pool])]
    result: dict = {
        "changed": bool(changed),
        "changed_pools": changed,
        "pools": {
            pool: {"generation": gen, "members": [m.as_dict() for m in members]}
            for pool, (gen, members, _raw) in current.items()
        },
    }
    if diff and changed:
        result["diff"] = [
            {
                "before_header": f"{params['url']}/members/{pool}",
                "after_header": f"{params['url']}/members/{pool}",
                "before": describe(current[pool][1]),
                "after": describe(wanted[pool]),
            }
            for pool in changed
        ]
    if check_mode:
        return result
    done: list[str] = []
    for pool in changed:
        try:
            generation = client.replace(pool, current[pool][0], wanted[pool])
        except LbError as exc:
            already = f"; {', '.join(done)} changed already" if done else ""
            raise LbError(f"{exc}; pool {pool} keeps the members it had{already}") from exc
        done.append(pool)
        result["pools"][pool] = {"generation": generation, "members": [m.as_dict() for m in wanted[pool]]}
    return result


def drain_members(params: Mapping[str, Any], check_mode: bool) -> dict:
    """tenfold.stack.drain: wait until the members have no request in flight, on the LB and on each
    replica. LbError when a member is malformed or the LB cannot be read."""
    if params["lb_url"] and not params["pool"]:
        raise LbError("pool is required with lb_url")
    urls = {}
    for item in params["members"]:
        name = item.get("name", item.get("id"))
        missing = [key for key in ("address", "port") if key not in item] + ([] if name else ["name"])
        if missing:
            raise LbError(f"member {item!r} lacks {', '.join(missing)}")
        urls[name] = f"http://{item['address']}:{item['port']}{params['health_path']}"
    if check_mode or not urls:
        return {"changed": False, "replicas": [], "busy": []}

    lb = Client(params["lb_url"], timeout=2.0) if params["lb_url"] else None

    def inflight(name: str) -> int | None:
        """The replica's requests in flight plus the LB's on it; None when neither knows of any."""
        body = get_json(urls[name])
        app = None if body is None else int(body.get("inflight", 0))
        if lb is None:
            return app
        try:
            on_lb = lb.pool(params["pool"])[2].get(name, 0)
        except LbError as exc:
            raise LbError(f"cannot read the LB's requests in flight: {exc}") from exc
        return (app or 0) + on_lb if (app is not None or on_lb) else None

    results = drain(
        list(urls), inflight, timeout=params["timeout"], settle=params["settle"], interval=params["interval"]
    )
    busy = [r.name for r in results if not r.drained]
    result: dict = {"changed": False, "replicas": [asdict(r) for r in results], "busy": busy}
    if busy:
        late = ", ".join(busy)
        result["warnings"] = [f"still busy after {params['timeout']}s, stopping anyway (graceful): {late}"]
    return result
