#!/usr/bin/python
# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pool
short_description: Reconcile a pool of app containers to a number of healthy replicas
description:
  - Makes replicas C(1..replicas) of a pool exist and run with the wanted configuration on a Docker host,
    and removes replicas above that number (highest index first, stopped gracefully).
  - Replica C(i) is the container C(<stack>-<pool>-<i>), labelled C(tenfold.stack), C(tenfold.pool) and
    C(tenfold.replica), publishing its port on O(bind_address):O(port_base)+C(i).
  - A new or recreated replica counts only once its health endpoint answers 200. If it does not within
    O(health_timeout), the replicas this run created are removed, a recreated replica's previous container is
    put back, and the module fails with the replica's last log lines. The pool is then as it was.
  - A replica is recreated when its configuration (image ID, limits, environment, ports...) changes.
  - With O(warm_replicas), replicas C(replicas+1..replicas+warm) run too, healthy and named
    C(<stack>-<pool>-<i>-warm); they are not members, so the load balancer never sends them a request. A
    scale-up promotes them first (a health check, then a rename; no container starts on the critical path);
    a scale-down demotes the serving replicas it leaves behind into warm ones.
  - Each container gets CPU and memory limits, reservations at O(reservation_ratio) of the limits (memory
    reservation and a CPU-shares weight), a healthcheck, a restart policy, a read-only root filesystem, all
    capabilities dropped and no-new-privileges.
  - With C(--diff), says per replica what the run does, in the order it does it (removed, demoted, promoted,
    started, recreated, created). A recreated replica's lines name each setting that differs between its
    container and the wanted config, such as the image ID, cpus, memory limits, ports, restart policy,
    healthcheck or user. Environment variables are named by key (added, removed, changed), never with their
    values.
version_added: "0.1.0"
author: tenfold contributors (!UNKNOWN)
options:
  stack:
    description: Name of the stack; prefixes container names and is stored in the C(tenfold.stack) label.
    type: str
    required: true
  pool:
    description: Name of the pool, for example C(frontend) or C(backend).
    type: str
    required: true
  replicas:
    description:
      - How many replicas the pool must have. C(0) removes them all.
      - With O(preserve_current), only the size of a pool that has no replica yet.
    type: int
    required: true
  warm_replicas:
    description:
      - Replicas kept started and healthy beyond O(replicas), out of the load balancer, for scale-ups to
        promote. They count toward O(max_replicas) (a pool at its maximum keeps none); a pool of no replica
        keeps none.
    type: int
    default: 0
  warm_start:
    description:
      - How the warm replicas that are missing start. C(wait) starts them and waits until each answers its
        health endpoint, as new serving replicas do; C(start) starts them without waiting (their health is
        checked when they are promoted); C(later) leaves them for a later run.
      - C(scale.yml) uses C(later) in its first step, so that the new serving replicas reach the load
        balancer first, and C(start) in its last.
    type: str
    default: wait
    choices: [wait, start, later]
  preserve_current:
    description:
      - Keep a running pool at its current size (clamped to O(min_replicas) and O(max_replicas)) instead of
        O(replicas), so that converging the stack again does not undo scaling.
    type: bool
    default: false
  current:
    description:
      - With O(preserve_current), the pool's current size across all its hosts (as M(tenfold.stack.pool_info)
        counts it on each). Without it, the serving replicas on this host are the pool's size.
    type: int
  hosts:
    description:
      - How many Docker hosts the pool is spread over. Replica C(i) runs on the host whose O(host_index) is
        C((i - 1) mod hosts), so names and ports stay unique across the hosts and a scale run never moves a
        replica. The replicas of the pool found here that belong to another host are removed.
    type: int
    default: 1
  host_index:
    description: This host's place among the pool's O(hosts), from C(0) (inventory order).
    type: int
    default: 0
  min_replicas:
    description: With O(preserve_current), the fewest replicas the pool is kept at.
    type: int
    default: 0
  max_replicas:
    description:
      - With O(preserve_current), the most replicas the pool is kept at.
      - Serving and warm replicas together never exceed it.
    type: int
    default: 65535
  image:
    description: Image of the app. Must already be on the Docker host.
    type: str
    required: true
  port_base:
    description: Replica C(i) publishes its port on O(port_base)+C(i).
    type: int
    required: true
  container_port:
    description: Port the app listens on inside the container.
    type: int
    default: 8080
  bind_address:
    description: Host address the replicas' ports are published on.
    type: str
    default: 127.0.0.1
  advertise_address:
    description:
      - Address the load balancer uses to reach the replicas, returned in RV(members).
      - Defaults to O(bind_address), or C(127.0.0.1) when that is C(0.0.0.0).
    type: str
  network:
    description: Docker network the replicas join. It must exist.
    type: str
  cpus:
    description: CPU limit of each replica, in cores.
    type: float
    default: 1.0
  memory:
    description: Memory limit of each replica, such as C(512m) or C(1g).
    type: str
    default: 512m
  reservation_ratio:
    description: Reservations as a share of the limits (memory reservation and CPU-shares weight).
    type: float
    default: 0.5
  env:
    description:
      - Extra environment variables for the app.
      - Their values may be secrets, so they are never shown (C(no_log)); a value is masked wherever it
        appears in the task's output.
    type: dict
    default: {}
  max_concurrency:
    description:
      - Requests the app works on at once (its C(MAX_CONCURRENCY)); unset, the app's own default.
      - An option of its own rather than an O(env) entry, so that its value is not masked in the output.
    type: int
  user:
    description: User the app runs as inside the container.
    type: str
    default: "10001"
  restart_policy:
    description: Docker restart policy of the replicas.
    type: str
    default: unless-stopped
    choices: ["no", on-failure, always, unless-stopped]
  health_path:
    description: HTTP path that answers 200 when a replica is ready to serve.
    type: str
    default: /health
  health_timeout:
    description: Seconds a new replica has to become healthy.
    type: int
    default: 60
  stop_timeout:
    description: Seconds a replica has to finish in-flight requests after SIGTERM before it is killed.
    type: int
    default: 30
extends_documentation_fragment:
  - tenfold.stack.docker
  - tenfold.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Scale-down through this module alone does not drain; C(scale.yml) takes replicas out of the load balancer
    and drains them before it calls this module with the smaller number.
"""

EXAMPLES = r"""
- name: Run three backend replicas
  tenfold.stack.pool:
    stack: tenfold
    pool: backend
    replicas: 3
    image: tenfold/backend:local
    port_base: 18200
    memory: 1g
    max_concurrency: 32
  register: backend

- name: Show where nginx reaches them
  ansible.builtin.debug:
    msg: "{{ backend.members | map(attribute='port') | list }}"
"""

RETURN = r"""
members:
  description: The replicas of the pool after the run, in index order, as the load balancer reaches them.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "tenfold-backend-1", "replica": 1, "address": "127.0.0.1", "port": 18201}]
created:
  description: Names of the replicas this run created.
  returned: always
  type: list
  elements: str
recreated:
  description: Names of the replicas recreated because their configuration changed.
  returned: always
  type: list
  elements: str
started:
  description: Names of existing replicas that were stopped and have been started.
  returned: always
  type: list
  elements: str
removed:
  description: Names of the containers removed (replicas above the wanted number, or strays).
  returned: always
  type: list
  elements: str
promoted:
  description: Names of the warm replicas that became serving replicas (health-checked, then renamed).
  returned: always
  type: list
  elements: str
demoted:
  description: Names of the serving replicas that became warm ones (a scale-down keeps them started).
  returned: always
  type: list
  elements: str
warm:
  description: Names of the pool's warm replicas after the run.
  returned: always
  type: list
  elements: str
  sample: ["tenfold-backend-4-warm"]
removed_members:
  description:
    - The serving replicas that leave the pool (removed, or demoted into warm ones), as RV(members) lists
      them; in check mode, those that would.
  returned: always
  type: list
  elements: dict
replicas:
  description: Number of replicas after the run.
  returned: always
  type: int
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tenfold.stack.plugins.module_utils.engine import (
    client,
    create,
    image_env,
    image_id,
    observed_config,
    pool_containers,
    remove,
    remove_all,
    rename,
    start,
    wait_healthy,
)
from ansible_collections.tenfold.stack.plugins.module_utils.pool import (
    Plan,
    PoolError,
    PoolSpec,
    check_name,
    config_changes,
    member,
    parse_memory,
    placed_here,
    plan,
    plan_report,
    probe_address,
    replica_name,
    replica_port,
    warm_count,
    warm_name,
)


def argument_spec() -> dict:
    return {
        "stack": {"type": "str", "required": True},
        "pool": {"type": "str", "required": True},
        "replicas": {"type": "int", "required": True},
        "warm_replicas": {"type": "int", "default": 0},
        "warm_start": {"type": "str", "default": "wait", "choices": ["wait", "start", "later"]},
        "preserve_current": {"type": "bool", "default": False},
        "current": {"type": "int"},
        "hosts": {"type": "int", "default": 1},
        "host_index": {"type": "int", "default": 0},
        "min_replicas": {"type": "int", "default": 0},
        "max_replicas": {"type": "int", "default": 65535},
        "image": {"type": "str", "required": True},
        "port_base": {"type": "int", "required": True},
        "container_port": {"type": "int", "default": 8080},
        "bind_address": {"type": "str", "default": "127.0.0.1"},
        "advertise_address": {"type": "str"},
        "network": {"type": "str"},
        "cpus": {"type": "float", "default": 1.0},
        "memory": {"type": "str", "default": "512m"},
        "reservation_ratio": {"type": "float", "default": 0.5},
        "env": {"type": "dict", "default": {}, "no_log": True},
        "max_concurrency": {"type": "int"},
        "user": {"type": "str", "default": "10001"},
        "restart_policy": {
            "type": "str",
            "default": "unless-stopped",
            "choices": ["no", "on-failure", "always", "unless-stopped"],
        },
        "health_path": {"type": "str", "default": "/health"},
        "health_timeout": {"type": "int", "default": 60},
        "stop_timeout": {"type": "int", "default": 30},
        "docker_host": {"type": "str"},
    }


def build_spec(params: dict, resolved_image: str) -> PoolSpec:
    check_name("stack", params["stack"])
    check_name("pool", params["pool"])
    if params["replicas"] < 0:
        raise PoolError(f"replicas must be 0 or more, got {params['replicas']}")
    if params["warm_replicas"] < 0:
        raise PoolError(f"warm_replicas must be 0 or more, got {params['warm_replicas']}")
    if not 0 < params["cpus"] <= 64:
        raise PoolError(f"cpus must be more than 0 and at most 64, got {params['cpus']}")
    if not 0 < params["reservation_ratio"] <= 1:
        raise PoolError(f"reservation_ratio must be in (0, 1], got {params['reservation_ratio']}")
    for key in ("port_base", "container_port"):
        if not 1 <= params[key] <= 65535:
            raise PoolError(f"{key} must be a port number (1-65535), got {params[key]}")
    replicas = params["replicas"]
    slots = replicas + warm_count(replicas, params["warm_replicas"], params["max_replicas"])
    if params["port_base"] + slots > 65535:
        raise PoolError(f"port_base {params['port_base']} + {slots} replicas runs past port 65535")
    return PoolSpec(
        stack=params["stack"],
        pool=params["pool"],
        image_id=resolved_image,
        container_port=params["container_port"],
        bind_address=params["bind_address"],
        port_base=params["port_base"],
        cpus=params["cpus"],
        memory=parse_memory(params["memory"]),
        reservation_ratio=params["reservation_ratio"],
        env=app_env(params),
        network=params["network"] or "",
        user=params["user"],
        restart_policy=params["restart_policy"],
        stop_timeout=params["stop_timeout"],
    )


def app_env(params: dict) -> dict:
    env = dict(params["env"])
    if params["max_concurrency"] is not None:
        if params["max_concurrency"] < 1:
            raise PoolError(f"max_concurrency must be 1 or more, got {params['max_concurrency']}")
        env["MAX_CONCURRENCY"] = str(params["max_concurrency"])
    return env


def wanted_replicas(params: dict, existing: list) -> int:
    """The pool's size: `replicas`, or with preserve_current the running pool's size within its bounds."""
    current = params["current"]
    if current is None:
        current = sum(1 for replica in existing if replica.index >= 1 and not replica.warm)
    if not params["preserve_current"] or current == 0:
        return params["replicas"]
    if params["min_replicas"] > params["max_replicas"]:
        low, high = params["min_replicas"], params["max_replicas"]
        raise PoolError(f"min_replicas {low} is above max_replicas {high}")
    return min(max(current, params["min_replicas"]), params["max_replicas"])


def recreate_changes(cli: Any, spec: PoolSpec, todo: Plan, by_index: dict[int, Any]) -> dict[int, list[str]]:
    """For each replica the plan recreates, what differs between its container and the wanted config (env
    keys, never values)."""
    changes = {}
    envs: dict[str, dict[str, str]] = {}  # by image ID: the replicas of a pool mostly share one
    for index in todo.recreate:
        attrs = by_index[index].attrs or {}
        image = attrs.get("Image") or ""
        if image not in envs:
            envs[image] = image_env(cli, image)
        wanted = spec.container_config(index, todo.is_warm(index))
        changes[index] = config_changes(observed_config(attrs, envs[image], wanted["environment"]), wanted)
    return changes


class PoolReconciler:
    """Carries out a plan against the engine, undoing its own work when a replica is not healthy."""

    def __init__(
        self, module: AnsibleModule, cli: Any, spec: PoolSpec, todo: Plan, idle: frozenset[str] = frozenset()
    ) -> None:
        self.module = module
        self.cli = cli
        self.spec = spec
        self.todo = todo
        self.idle = idle  # warm replicas' names: nothing in flight to wait for when they go
        self.probe = probe_address(spec.bind_address)
        self.promoted: list[int] = []
        self.result: dict[str, list[str]] = {
            "created": [],
            "recreated": [],
            "started": [],
            "removed": [],
            "promoted": [],
            "demoted": [],
        }

    def name(self, index: int) -> str:
        stack, pool = self.spec.stack, self.spec.pool
        return warm_name(stack, pool, index) if self.todo.is_warm(index) else replica_name(stack, pool, index)

    def health_url(self, index: int) -> str:
        port = replica_port(self.spec.port_base, index)
        return f"http://{self.probe}:{port}{self.module.params['health_path']}"

    def gate(self, container: Any, index: int) -> str | None:
        return wait_healthy(container, self.health_url(index), self.module.params["health_timeout"])

    def promote(self, indexes: list[int], by_index: dict[int, Any]) -> None:
        """Warm replicas become serving ones: each is checked healthy right before its rename (one that
        stopped is started first)."""
        for index in indexes:
            container = by_index[index]
            try:
                if container.status == "exited" or container.status == "created":
                    start(container)
                problem = self.gate(container, index)
                if problem:
                    raise PoolError(f"warm replica is not healthy, nothing promoted: {problem}")
            except PoolError:
                self.undo_promotions(by_index)
                raise
            rename(container, self.name(index))
            self.promoted.append(index)
            self.result["promoted"].append(self.name(index))

    def undo_promotions(self, by_index: dict[int, Any]) -> None:
        for index in self.promoted:
            rename(by_index[index], warm_name(self.spec.stack, self.spec.pool, index))
        self.promoted, self.result["promoted"] = [], []

    def create_all(self, indexes: list[int]) -> None:
        """Start the new replicas together, then gate each; on a failure remove every one of them."""
        started = []
        try:
            for index in indexes:
                started.append(create(self.cli, self.spec, index, self.todo.is_warm(index)))
            for container, index in zip(started, indexes, strict=True):
                if self.todo.is_warm(index) and self.module.params["warm_start"] == "start":
                    continue  # checked when it is promoted
                problem = self.gate(container, index)
                if problem:
                    raise PoolError(f"new replica never became healthy: {problem}")
        except PoolError:
            for container in started:
                remove(container, stop_timeout=5)
            raise
        self.result["created"].extend(c.name for c in started)

    def recreate(self, index: int, old: Any) -> None:
        """Replace one replica; if the replacement is unhealthy, put the previous container back."""
        name = old.name
        parked = f"{name}-previous"
        old.rename(parked)
        old.stop(timeout=self.spec.stop_timeout)
        new = None
        try:
            new = create(self.cli, self.spec, index, self.todo.is_warm(index))
            problem = self.gate(new, index)
            if problem:
                raise PoolError(f"replacement replica never became healthy: {problem}")
        except PoolError:
            if new is not None:
                remove(new, stop_timeout=5)
            old.rename(name)
            old.start()
            raise
        remove(old, stop_timeout=self.spec.stop_timeout)
        self.result["recreated"].append(self.name(index))

    def start(self, index: int, container: Any) -> None:
        start(container)
        problem = self.gate(container, index)
        if problem:
            raise PoolError(f"replica did not come back healthy: {problem}")
        self.result["started"].append(container.name)

    def carry_out(self, containers: dict[str, Any], by_index: dict[int, Any]) -> None:
        """Serving capacity first: promotions (renames) before anything starts; warm replicas last."""
        leaving = {name: containers[name] for name in self.todo.remove}
        remove_all(leaving, self.spec.stop_timeout, idle=self.idle)
        self.result["removed"].extend(leaving)
        for index in self.todo.demote:
            rename(by_index[index], self.name(index))
            self.result["demoted"].append(self.name(index))
        self.promote(self.todo.promote, by_index)
        try:
            for index in self.todo.start:
                if index not in self.todo.promote:  # promote started it
                    self.start(index, by_index[index])
            for index in self.todo.recreate:
                self.recreate(index, by_index[index])
            if self.todo.create:
                self.create_all(self.todo.create)
        except PoolError:
            self.undo_promotions(by_index)
            raise


def run(module: AnsibleModule) -> dict:
    params = dict(module.params)
    cli = client(params["docker_host"])
    found = pool_containers(cli, params["stack"], params["pool"])
    params["replicas"] = wanted_replicas(params, [replica for replica, _container in found])
    spec = build_spec(params, image_id(cli, params["image"]) if params["replicas"] > 0 else "")
    warm = warm_count(params["replicas"], params["warm_replicas"], params["max_replicas"])
    slots = params["replicas"] + warm
    here = [i for i in range(1, slots + 1) if placed_here(i, params["hosts"], params["host_index"])]
    wanted = {i: spec.config_hash(i) for i in here}
    todo = plan(
        [replica for replica, _container in found],
        params["replicas"],
        wanted,
        warm,
        params["hosts"],
        params["host_index"],
    )
    if params["warm_start"] == "later":
        todo = todo.without_new_warm()
    containers = {replica.name: container for replica, container in found}
    # A slot's container: the one the plan kept for it (already in the slot's state when there were two).
    by_index = {
        r.index: containers[r.name] for r, _container in found if r.index >= 1 and r.name not in todo.remove
    }

    warm_now = frozenset(replica.name for replica, _container in found if replica.warm)
    work = PoolReconciler(module, cli, spec, todo, warm_now)
    kept = set(todo.keep + todo.start + todo.create + todo.recreate)
    before = [
        replica.name for replica, _container in sorted(found, key=lambda pair: (pair[0].index, pair[0].name))
    ]
    after = [work.name(i) for i in here if i in kept]
    serving = [i for i in here if not todo.is_warm(i)]
    advertise = params["advertise_address"] or probe_address(spec.bind_address)
    result: dict[str, Any] = {
        "changed": todo.changed,
        "created": [work.name(i) for i in todo.create],
        "recreated": [work.name(i) for i in todo.recreate],
        "started": [work.name(i) for i in todo.start],
        "removed": list(todo.remove),
        "promoted": [work.name(i) for i in todo.promote],
        "demoted": [work.name(i) for i in todo.demote],
        "warm": [work.name(i) for i in here if todo.is_warm(i) and i in kept],
        "removed_members": [
            member(spec, replica.index, advertise)
            for replica, _container in found
            if replica.index >= 1 and not replica.warm and replica.index not in serving
        ],
        "replicas": params["replicas"],
        "members": [member(spec, i, advertise) for i in serving],
    }
    if module._diff:
        result["diff"] = {
            "before_header": f"{spec.stack}/{spec.pool}",
            "after_header": f"{spec.stack}/{spec.pool}",
            "before": "\n".join(before) + "\n",
            "after": "\n".join(after) + "\n",
        }
        current = {index: container.name for index, container in by_index.items()}
        report = plan_report(
            todo, spec.stack, spec.pool, current, recreate_changes(cli, spec, todo, by_index)
        )
        if report:
            result["diff"]["prepared"] = "\n".join([f"{spec.stack}/{spec.pool}:", *report]) + "\n"
    if module.check_mode or not todo.changed:
        return result

    work.carry_out(containers, by_index)
    result.update(work.result)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(module)
    except PoolError as exc:
        module.fail_json(msg=f"{module.params['stack']}/{module.params['pool']}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
