# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Pure parts of the apps: settings, the in-flight counter, sessions and input parsing.

Nothing here imports aiohttp, so the unit tests run without it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    """What an app instance learns from its environment."""

    instance: str
    pool: str
    port: int

    @classmethod
    def from_env(cls, pool: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            instance=env.get("INSTANCE_NAME") or socket.gethostname(),
            pool=env.get("POOL") or pool,
            port=env_int(env, "PORT", 8080, minimum=1),
        )


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """An integer setting; a malformed or too small value fails at startup with the variable's name."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def parse_ms(raw: str | None, maximum: int = 10_000) -> int:
    """The `ms` query parameter of /api/work: an integer from 0 to `maximum` (absent means 0)."""
    if raw is None or raw == "":
        return 0
    if not re.fullmatch(r"[0-9]{1,6}", raw):
        raise ValueError(f"ms must be an integer from 0 to {maximum}, got {raw!r}")
    value = int(raw)
    if value > maximum:
        raise ValueError(f"ms must be an integer from 0 to {maximum}, got {value}")
    return value


@dataclass
class Inflight:
    """Requests in progress (health checks excluded): the scaler drains an instance until this is 0.

    The apps run one asyncio event loop, so a plain counter is safe.
    """

    count: int = 0

    def __enter__(self) -> Inflight:
        self.count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.count -= 1


@dataclass
class SessionStore:
    """Per-instance, in-memory visit counts by session id, least recently used evicted past `limit`.

    Ids are always issued here: an unknown id from a client starts a new session (no session fixation).
    """

    limit: int = 100_000
    _visits: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def visit(self, session_id: str | None) -> tuple[str, int, bool]:
        """Count a visit. Returns the session id, its visits and whether the session is new."""
        is_new = session_id is None or session_id not in self._visits
        if is_new:
            session_id = secrets.token_urlsafe(18)
            self._visits[session_id] = 0
            while len(self._visits) > self.limit:
                self._visits.popitem(last=False)
        assert session_id is not None
        self._visits[session_id] += 1
        self._visits.move_to_end(session_id)
        return session_id, self._visits[session_id], is_new

    def __len__(self) -> int:
        return len(self._visits)
