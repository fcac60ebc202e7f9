# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""The Docker engines of a stack's hosts: the local one, or each Docker host of a fleet over SSH.

Settings name each host's engine, `{"name": "app1", "url": "ssh://deploy@10.0.1.11"}`; an empty url is
the local engine (DOCKER_HOST or the default socket). Over SSH the Docker SDK runs `ssh HOST docker system
dial-stdio` per connection, and ssh reads its options (key, known hosts, timeouts) from no environment
variable, so `ssh_options` go through a small wrapper put first on this process's PATH.

A host that fails is reported unreachable and left alone for `retry_s`, so that a lost host costs the
monitor one slow reading, not one per tick.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

LOCAL = "local"
DEFAULT_RETRY_S = 10.0


@dataclass(frozen=True)
class EngineHost:
    name: str
    url: str = ""  # "" = the local engine

    @classmethod
    def from_mapping(cls, raw: Any) -> EngineHost:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ValueError(f"a Docker host needs a name (and a url), got {raw!r}")
        url = raw.get("url") or ""
        if not isinstance(url, str) or (url and not url.startswith(("ssh://", "unix://", "tcp://"))):
            raise ValueError(f"Docker host {raw['name']}: url {url!r} is not ssh://, unix:// or tcp://")
        return cls(raw["name"], url)


def _connect(host: EngineHost, max_pool_size: int) -> Any:
    if not host.url:
        client = docker.from_env(max_pool_size=max_pool_size)
    elif host.url.startswith("ssh://"):
        # a call to a lost host ends when ssh gives up (its ServerAlive* options): the SDK's timeout does
        # not reach the ssh process's pipe
        client = docker.DockerClient(base_url=host.url, use_ssh_client=True, max_pool_size=max_pool_size)
    else:
        client = docker.DockerClient(base_url=host.url, max_pool_size=max_pool_size)
    client.api.trust_env = False  # no proxy lookups from the environment on every call
    return client


class Engines:
    def __init__(
        self,
        hosts: Sequence[EngineHost] = (EngineHost(LOCAL),),
        *,
        max_pool_size: int = 32,
        retry_s: float = DEFAULT_RETRY_S,
        connect: Callable[[EngineHost, int], Any] = _connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hosts = tuple(hosts)
        self.max_pool_size = max_pool_size
        self.retry_s = retry_s
        self._connect = connect
        self._clock = clock
        self._clients: dict[str, Any] = {}
        self._failed_at: dict[str, float] = {}

    def resting(self, host: EngineHost) -> bool:
        """Failed less than retry_s ago: not asked again yet."""
        failed = self._failed_at.get(host.name)
        return failed is not None and self._clock() - failed < self.retry_s

    def client(self, host: EngineHost) -> Any:
        if host.name not in self._clients:
            self._clients[host.name] = self._connect(host, self.max_pool_size)
        return self._clients[host.name]

    def ok(self, host: EngineHost) -> None:
        self._failed_at.pop(host.name, None)

    def failed(self, host: EngineHost) -> None:
        """Forget the host's client (the next try reconnects) and rest it."""
        self._failed_at[host.name] = self._clock()
        client = self._clients.pop(host.name, None)
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken client must not fail the tick
                client.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def use_ssh_options(options: Sequence[str], directory: Path | None = None) -> Path | None:
    """Make `ssh` on this process's PATH run the system's ssh with `options` first (BatchMode always: no
    prompt can block the monitor). Returns the wrapper's directory; None when there is no option."""
    if not options:
        return None
    real = shutil.which("ssh")
    if real is None:
        raise ValueError("ssh is not installed, and the monitor's Docker hosts are reached over SSH")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="tenfold-monitor-ssh-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)  # the process's own: gone with it
    wrapper = directory / "ssh"
    quoted = " ".join(shlex.quote(o) for o in ["-o", "BatchMode=yes", *options])
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(real)} {quoted} "$@"\n')
    wrapper.chmod(0o700)
    os.environ["PATH"] = f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"
    return directory
