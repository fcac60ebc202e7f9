"""A session-wide test stack on the real Docker engine: up before the first test, down after the last."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml
from helpers import COLLECTION, STACK_VARS, STATE_DIR, Client, Figures, playbook, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    name: str
    http_port: int
    https_port: int
    status_port: int
    vars: dict

    def client(self, source: str = "127.0.0.1") -> Client:
        return Client(self.https_port, source=source)

    def plain_client(self, source: str = "127.0.0.1") -> Client:
        return Client(self.http_port, source=source, tls=False)

    def lb_api(
        self, method: str, path: str, body: object = None, source: str = "127.0.0.1"
    ) -> tuple[int, dict]:
        """A call to the LB's status and control server (127.0.0.1 only): its status and JSON body."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.status_port, timeout=10, source_address=(source, 0)
        )
        try:
            payload = None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body))
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, {"text": text}

    def lb_pool(self, pool: str) -> dict:
        """A pool as the LB has it: generation, members (id, address, port, state, inflight, failing)."""
        status, body = self.lb_api("GET", f"/members/{pool}")
        assert status == 200, body
        return body

    def wait_until_none_rests(self, pool: str, timeout: float = 30) -> bool:
        """Whether, within timeout, no member of the pool rests after failed tries (fail_timeout, 10 s): a
        test that killed replicas leaves the LB so for a while, and the next test must not meet it."""
        return bool(wait_for(lambda: not any(m["failing"] for m in self.lb_pool(pool)["members"]), timeout))

    def lb_workers(self, engine: docker.DockerClient) -> list[int]:
        """PIDs of the LB's nginx worker processes: a reload replaces them, a member change does not."""
        top = engine.containers.get(f"{self.name}-lb").top()
        cmd = top["Titles"].index("CMD")
        return sorted(
            int(p[top["Titles"].index("PID")]) for p in top["Processes"] if "worker process" in p[cmd]
        )

    def setting(self, role: str, name: str):
        """A role variable as this stack has it: from the stack's vars file, else the role's default."""
        if name in self.vars:
            return self.vars[name]
        return yaml.safe_load((COLLECTION / "roles" / role / "defaults" / "main.yml").read_text())[name]


def stack_containers(engine: docker.DockerClient, name: str) -> list:
    # ignore_removed: a replica a scale-down removes between the listing and its inspect is simply gone
    return engine.containers.list(all=True, filters={"label": f"tenfold.stack={name}"}, ignore_removed=True)


def pool_containers(engine: docker.DockerClient, stack: Stack, pool: str, warm: bool = False) -> list:
    """The pool's serving replicas (any state), by replica index; with warm=True, its warm ones instead."""
    found = [
        c
        for c in stack_containers(engine, stack.name)
        if c.labels.get("tenfold.pool") == pool and c.name.endswith("-warm") == warm
    ]
    return sorted(found, key=lambda c: int(c.labels["tenfold.replica"]))


def tree_files(root: Path) -> dict[str, tuple[str, int]]:
    """SHA-256 and mode of every file under root, by its path relative to root."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def snapshot(engine: docker.DockerClient, stack: Stack) -> dict:
    """What a refused run must not change: the containers (ID, status, start time), each pool's replica
    count, and the live nginx config and TLS files (SHA-256 and mode)."""
    containers = stack_containers(engine, stack.name)
    return {
        "containers": {c.name: (c.id, c.status, c.attrs["State"]["StartedAt"]) for c in containers},
        "replicas": dict(Counter(c.labels.get("tenfold.pool", "lb") for c in containers)),
        **config_files(stack),
    }


def config_files(stack: Stack) -> dict[str, dict]:
    """The stack's live nginx configuration and TLS files."""
    return {kind: tree_files(Path(f"/etc/tenfold/{stack.name}/{kind}")) for kind in ("nginx", "tls")}


def put(stack, pool: str, members: list[dict], generation: int | None = None) -> tuple[int, dict]:
    if generation is None:
        generation = stack.lb_pool(pool)["generation"]
    return stack.lb_api("PUT", f"/members/{pool}", {"generation": generation, "members": members})


def plain(members: list[dict], **states: str) -> list[dict]:
    """Members as a write takes them; states={id: state} overrides some."""
    return [
        {"id": m["id"], "address": m["address"], "port": m["port"], "state": states.get(m["id"], m["state"])}
        for m in members
    ]


@contextlib.contextmanager
def members_restored(stack, pool: str):
    """Whatever a test does to the pool, it ends with the members it had."""
    original = plain(stack.lb_pool(pool)["members"])
    try:
        yield original
    finally:
        status, body = put(stack, pool, original)
        assert status == 200, body


@pytest.fixture(scope="session")
def figures():
    """Where tests record what they measured (see helpers.Figures); written out if TENFOLD_FIGURES is set."""
    book = Figures()
    yield book
    if os.environ.get("TENFOLD_FIGURES"):
        book.write(os.environ["TENFOLD_FIGURES"])


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    return docker.from_env()


def remove_state() -> None:
    """The session stack's scale lock and events (`down` keeps a stack's history; the suite leaves none)."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):
        STATE_DIR.parent.rmdir()  # /var/lib/tenfold/<stack>, once the LB's state is gone too


@pytest.fixture(scope="session")
def stack(engine: docker.DockerClient):
    values = yaml.safe_load(STACK_VARS.read_text())
    result = Stack(
        name=values["tenfold_stack"],
        http_port=values["nginx_lb_http_port"],
        https_port=values["nginx_lb_https_port"],
        status_port=values["nginx_lb_status_port"],
        vars=values,
    )
    playbook("playbooks/down.yml")  # leftovers of an interrupted earlier run
    remove_state()
    try:
        run = playbook("site.yml")
        assert run.rc == 0, run.output[-6000:]
        yield result
    finally:
        down = playbook("playbooks/down.yml")
        remove_state()
        leftovers = [c.name for c in stack_containers(engine, result.name)]
        assert down.rc == 0 and not leftovers, down.output[-3000:] + f"\nleft behind: {leftovers}"
