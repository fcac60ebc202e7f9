# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The LB's live upstreams (/etc/tenfold/<stack>/nginx/upstreams.conf): the addresses each pool serves from.

Shared with scripts/tenfold_status.py, which imports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_UPSTREAM_RE = re.compile(r"^[ \t]*upstream\s+([A-Za-z0-9_.-]+)\s*\{([^}]*)\}", re.M)
_COMMENT_RE = re.compile(r"#[^\n]*")


@dataclass(frozen=True)
class UpstreamServer:
    address: str
    backup: bool = False
    down: bool = False

    @property
    def serving(self) -> bool:
        """A server nginx sends traffic to in normal operation (not a backup, not marked down)."""
        return not (self.backup or self.down)


def parse_upstreams(text: str) -> dict[str, list[UpstreamServer]]:
    """Every `upstream NAME { server ADDR [params]; ... }` block of an nginx config, by name."""
    blocks: dict[str, list[UpstreamServer]] = {}
    for match in _UPSTREAM_RE.finditer(_COMMENT_RE.sub("", text)):
        servers = []
        for directive in match.group(2).split(";"):
            words = directive.split()
            if len(words) >= 2 and words[0] == "server":
                flags = set(words[2:])
                servers.append(UpstreamServer(words[1], backup="backup" in flags, down="down" in flags))
        blocks[match.group(1)] = servers
    return blocks


def pool_members(blocks: dict[str, list[UpstreamServer]], pool: str) -> set[str]:
    """ADDR:PORT the LB serves `pool` from: non-backup, non-down servers of upstream `tenfold_<pool>`.

    Per-replica upstreams (`tenfold_<pool>_<id>`) are not the pool's membership and are ignored.
    """
    return {server.address for server in blocks.get(f"tenfold_{pool}", []) if server.serving}


def member_key(address: str | None) -> str | None:
    """How the LB on this host reaches a published address: a wildcard bind is reached on 127.0.0.1."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "", "::", "[::]") else address


def read_upstreams(path: Path) -> dict[str, list[UpstreamServer]] | None:
    """The upstream blocks of the config at `path`; None when it cannot be read (membership unknown)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return parse_upstreams(text)
