# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Docker SDK helpers shared by tenfold's modules: the edge where pool plans meet the engine."""

from __future__ import annotations

import contextlib
import time
import urllib.error
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

try:
    import docker
    from docker.errors import DockerException, ImageNotFound, NotFound

    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - reported through the module
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = str(exc)

    # Stand-ins, so that this file loads and the module can say the SDK is missing.
    class DockerException(Exception):
        pass

    class NotFound(DockerException):
        pass

    class ImageNotFound(NotFound):
        pass


from ansible_collections.tenfold.stack.plugins.module_utils.pool import (
    LABEL_CONFIG,
    LABEL_POOL,
    LABEL_REPLICA,
    LABEL_STACK,
    PoolError,
    PoolSpec,
    Replica,
    replica_name,
    warm_name,
)


class EngineError(PoolError):
    """The Docker engine refused or failed an operation."""


def client(docker_host: str | None = None) -> Any:
    """A connected Docker client, or an EngineError that says how to fix the connection."""
    if not HAS_DOCKER:
        raise EngineError(
            "the Docker SDK for Python is missing on the target host ("
            + DOCKER_IMPORT_ERROR
            + "): install the 'docker' package into the interpreter Ansible uses there"
        )
    try:
        if docker_host:
            cli = docker.DockerClient(base_url=docker_host, version="auto", timeout=60)
        else:
            cli = docker.from_env(version="auto", timeout=60)
        cli.ping()
    except DockerException as exc:
        raise EngineError(
            f"cannot reach the Docker engine ({docker_host or 'default socket'}): {exc}"
        ) from exc
    return cli


def image_id(cli: Any, image: str) -> str:
    try:
        return cli.images.get(image).id
    except ImageNotFound as exc:
        raise EngineError(
            f"image {image!r} is not on this Docker host: build it (ansible-playbook playbooks/images.yml) "
            "or point the pool's image variable at one that exists"
        ) from exc


def pool_containers(cli: Any, stack: str, pool: str) -> list[tuple[Replica, Any]]:
    found = cli.containers.list(
        all=True, filters={"label": [f"{LABEL_STACK}={stack}", f"{LABEL_POOL}={pool}"]}
    )
    result = []
    for container in found:
        labels = container.labels or {}
        try:
            index = int(labels.get(LABEL_REPLICA, "0"))
        except ValueError:
            index = 0
        warm = container.name == warm_name(stack, pool, index)
        if not warm and container.name != replica_name(stack, pool, index):
            index = 0  # a stray copy (a "-previous" left by a killed run, say): removed by the plan
        replica = Replica(
            name=container.name,
            index=index,
            config_hash=labels.get(LABEL_CONFIG, ""),
            running=container.status == "running",
            warm=warm,
        )
        result.append((replica, container))
    return result


def replica_count(cli: Any, stack: str, pool: str) -> int:
    """How many serving replicas (not warm ones) the pool has on this engine, in any state."""
    return sum(1 for r, _container in pool_containers(cli, stack, pool) if r.index >= 1 and not r.warm)


def running_replicas(cli: Any, stack: str, pool: str) -> list[int]:
    """The indexes of the pool's serving replicas that run, in order (an exited or removed one leaves a
    gap). Warm replicas are not counted: they serve nothing until a scale run promotes them."""
    found = pool_containers(cli, stack, pool)
    return sorted({r.index for r, _container in found if r.running and r.index >= 1 and not r.warm})


def create(cli: Any, spec: PoolSpec, index: int, warm: bool = False) -> Any:
    config = spec.container_config(index, warm)
    config["labels"] = {**config["labels"], LABEL_CONFIG: spec.config_hash(index)}
    try:
        container = cli.containers.create(**config)
    except DockerException as exc:
        raise EngineError(f"could not create {config['name']}: {exc}") from exc
    try:
        container.start()
    except DockerException as exc:
        # not left behind "Created": the caller's clean-up knows only the containers this returned
        with contextlib.suppress(DockerException):
            container.remove(v=True, force=True)
        raise EngineError(f"could not start {config['name']}: {exc}") from exc
    return container


def env_dict(entries: list[str] | None) -> dict[str, str]:
    """Docker's ["KEY=value", ...] as a dict."""
    pairs = (entry.partition("=") for entry in entries or [])
    return {key: value for key, _eq, value in pairs}


def image_env(cli: Any, image: str) -> dict[str, str]:
    """The environment an image gives its containers ({} when the image is gone)."""
    if not image:
        return {}
    try:
        return env_dict((cli.images.get(image).attrs.get("Config") or {}).get("Env"))
    except DockerException:
        return {}


def observed_config(attrs: dict, from_image: dict[str, str], wanted_env: dict[str, str]) -> dict:
    """An existing container's settings (docker inspect's attrs) in PoolSpec.container_config()'s shape, so
    that config_changes() can say what differs. Pure: the engine was asked before.

    The container's environment includes its image's: a variable the image sets, with the image's value,
    that the wanted config does not set is the image's, not the pool's, and is left out."""
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    env = {
        key: value
        for key, value in env_dict(config.get("Env")).items()
        if key in wanted_env or from_image.get(key) != value
    }
    ports = {
        port: (binds[0].get("HostIp") or "", int(binds[0].get("HostPort") or 0))
        for port, binds in (host.get("PortBindings") or {}).items()
        if binds
    }
    health = config.get("Healthcheck") or {}
    log = host.get("LogConfig") or {}
    return {
        "image": attrs.get("Image"),
        "name": (attrs.get("Name") or "").lstrip("/"),
        "hostname": config.get("Hostname"),
        "labels": config.get("Labels") or {},
        "environment": env,
        "ports": ports,
        "network": host.get("NetworkMode"),
        "nano_cpus": host.get("NanoCpus"),
        "cpu_shares": host.get("CpuShares"),
        "mem_limit": host.get("Memory"),
        "mem_reservation": host.get("MemoryReservation"),
        "memswap_limit": host.get("MemorySwap"),
        "pids_limit": host.get("PidsLimit"),
        "user": config.get("User"),
        "cap_drop": host.get("CapDrop"),
        "security_opt": host.get("SecurityOpt"),
        "read_only": host.get("ReadonlyRootfs"),
        "tmpfs": host.get("Tmpfs"),
        "init": host.get("Init"),
        "restart_policy": host.get("RestartPolicy"),
        "stop_signal": config.get("StopSignal"),
        "healthcheck": {
            "test": health.get("Test"),
            "interval": health.get("Interval"),
            "timeout": health.get("Timeout"),
            "retries": health.get("Retries"),
            "start_period": health.get("StartPeriod"),
        },
        "log_config": {"type": log.get("Type"), "config": log.get("Config") or {}},
    }


def remove(container: Any, stop_timeout: int) -> None:
    """Graceful stop (SIGTERM, then SIGKILL after stop_timeout), then remove; stop_timeout 0 kills."""
    try:
        if container.status == "running" and stop_timeout > 0:
            container.stop(timeout=stop_timeout)
        container.remove(v=True, force=True)
    except NotFound:
        return
    except DockerException as exc:
        raise EngineError(f"could not remove {container.name}: {exc}") from exc


def remove_all(containers: Mapping[str, Any], stop_timeout: int, idle: Collection[str] = ()) -> None:
    """remove() each container, all at once: a graceful stop waits for its app (about half a second
    when nothing is in flight), and N of them in turn would wait N times. The ones named in `idle` (warm
    replicas: the LB never sends them a request) are removed without a graceful stop."""
    if not containers:
        return
    with ThreadPoolExecutor(max_workers=len(containers)) as workers:
        waits = [
            workers.submit(remove, container, 0 if name in idle else stop_timeout)
            for name, container in containers.items()
        ]
    for wait in waits:
        wait.result()


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with open_url(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, UrlConnectionError, OSError, ValueError):
        return False


def start(container: Any) -> None:
    try:
        container.start()
    except DockerException as exc:
        raise EngineError(f"could not start {container.name}: {exc}") from exc


def rename(container: Any, name: str) -> None:
    try:
        container.rename(name)
    except DockerException as exc:
        raise EngineError(f"could not rename {container.name} to {name}: {exc}") from exc


def wait_healthy(container: Any, url: str, timeout: float) -> str | None:
    """Wait until `url` answers 200. Returns None when healthy, else why not (with the log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        if http_ok(url):
            return None
        container.reload()
        if container.status not in ("running", "created", "restarting"):
            return f"{container.name} stopped ({container.status}); last log lines:\n{log_tail(container)}"
        if time.monotonic() >= deadline:
            return (
                f"{container.name} did not answer {url} with 200 within {timeout:g}s; "
                f"last log lines:\n{log_tail(container)}"
            )
        time.sleep(0.1)


def log_tail(container: Any, lines: int = 20) -> str:
    try:
        return container.logs(tail=lines).decode("utf-8", "replace").rstrip()
    except DockerException:
        return "(no logs)"
