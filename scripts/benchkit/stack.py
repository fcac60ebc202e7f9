# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""A stack the benches and load tests drive: its variables, its playbooks (bounded, logged), its pools.

A bench brings up a stack of its own with `Stack.own(...)` and `with stack.up(): ...`, which removes it
again with playbooks/down.yml whatever happens; the load tests target a stack that is up, from a vars file
(`Stack.from_file`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from ansible_collections.tenfold.stack.plugins.module_utils.pool import LABEL_POOL, LABEL_STACK

from benchkit.host import (
    BIN,
    ROOT,
    BenchError,
    answering,
    command_output,
    json_lines,
    run_logged,
    tool,
    wait_for_ports,
)

POOLS = ("frontend", "backend")
MAX_REPLICAS = 10


class PortTaken(BenchError):
    """Docker could not publish a new replica's port: a socket on this machine held it."""


@dataclass
class Stack:
    """A stack's variables, the checkout whose playbooks run on it, and a work directory for their logs
    and for the scale lock and events of the runs started here (tenfold_state_dir)."""

    values: dict
    workdir: Path
    vars_file: Path | None = None  # None: the local inventory's stack
    checkout: Path = ROOT
    runs: int = 0

    @classmethod
    def own(cls, name: str, base: int, workdir: Path, checkout: Path = ROOT, **extra: object) -> Stack:
        """A bench's own stack on 127.0.0.1: LB ports base+80/443/81, app ports base+100+ and base+200+."""
        values = {
            "tenfold_stack": name,
            "nginx_lb_listen_address": "127.0.0.1",
            "nginx_lb_http_port": base + 80,
            "nginx_lb_https_port": base + 443,
            "nginx_lb_status_port": base + 81,
            "app_pools_frontend_port_base": base + 100,
            "app_pools_backend_port_base": base + 200,
            "tenfold_state_dir": str(workdir),
            **extra,
        }
        workdir.mkdir(parents=True, exist_ok=True)
        vars_file = workdir / f"{name}-vars.json"
        vars_file.write_text(json.dumps(values, indent=2) + "\n")
        return cls(values, workdir, vars_file, checkout)

    @classmethod
    def from_file(cls, vars_file: Path | None, workdir: Path) -> Stack:
        """A stack that is up: the local inventory's (and the roles' defaults), or a vars file's values
        over it. Load is only ever sent to loopback."""
        values: dict = {}
        for path in (ROOT / "inventories" / "local" / "group_vars" / "all.yml", vars_file):
            if path is None:
                continue
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise BenchError(f"cannot read the stack's variables from {path}: {exc}") from None
            if not isinstance(loaded, dict):
                raise BenchError(f"{path}: not a mapping of variables")
            values.update(loaded)
        stack = cls(values, workdir, vars_file.resolve() if vars_file else None)
        try:
            loopback = (
                ipaddress.ip_address(stack.address).is_loopback and stack.https_port + stack.status_port > 0
            )
        except ValueError as exc:  # not an address, or a port that is not a number
            raise BenchError(f"bad stack variables: {exc}") from None
        if not loopback:
            raise BenchError(f"the load balancer listens on {stack.address}: load only targets loopback")
        return stack

    # --- what it is -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.values.get("tenfold_stack", "tenfold"))

    @property
    def address(self) -> str:
        address = str(self.values.get("nginx_lb_listen_address") or "127.0.0.1")
        return "127.0.0.1" if address in ("0.0.0.0", "::", "*") else address

    @property
    def https_port(self) -> int:
        return int(self.values.get("nginx_lb_https_port", 443))

    @property
    def status_port(self) -> int:
        return int(self.values.get("nginx_lb_status_port", 8081))

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.https_port}"

    @property
    def allowlist(self) -> list[str]:
        return [str(a) for a in self.values.get("nginx_lb_allowlist") or []]

    def port(self, pool: str, replica: int) -> int:
        """Where replica `replica` of `pool` publishes its port on 127.0.0.1."""
        defaults = {"frontend": 18100, "backend": 18200}
        return int(self.values.get(f"app_pools_{pool}_port_base", defaults[pool])) + replica

    def ports(self, replicas: int = MAX_REPLICAS) -> list[int]:
        lb = [self.values.get(f"nginx_lb_{k}_port") for k in ("http", "https", "status")]
        return [int(p) for p in lb if p] + [self.port(p, i) for p in POOLS for i in range(1, replicas + 1)]

    # --- its playbooks ----------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.checkout / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "COLUMNS": "160",
            **extra,
        }

    def command(self, playbook: str, *args: str) -> list[str]:
        extra = ["-e", f"@{self.vars_file}"] if self.vars_file else []
        return [tool("ansible-playbook"), playbook, *extra, *args]

    def scale_command(self) -> list[str]:
        """scale.yml on this stack, its lock and events in the work directory (the monitor runs it)."""
        return [*self.command("scale.yml"), "-e", f"tenfold_state_dir={self.workdir}"]

    def run(self, playbook: str, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> Path:
        """A playbook on the stack (bounded; stopped on Ctrl-C); fails with its output if it failed. A
        failure because Docker could not publish a port is a PortTaken."""
        self.runs += 1
        log = self.workdir / f"{self.runs:03d}-{Path(playbook).stem}.log"
        cmd = self.command(playbook, *args)
        rc = run_logged(cmd, log, timeout, cwd=self.checkout, env=env or self.env())
        if rc != 0:
            text = log.read_text(errors="replace")
            error = PortTaken if "address already in use" in text else BenchError
            raise error(f"{' '.join(cmd)} exited {rc} (log: {log}):\n{text[-4000:]}")
        return log

    def scale(
        self, pool: str, replicas: int, *args: str, timeout: float = 300, env: dict | None = None
    ) -> Path:
        """scale.yml for one pool (`env`: the environment of the run, say with more callbacks)."""
        scale = ("scale.yml", "-e", f"pool={pool}", "-e", f"replicas={replicas}")
        return self.run(*scale, *args, timeout=timeout, env=env)

    def restore(self, sizes: dict[str, int]) -> None:
        """Scale the pools back to `sizes` (after a load that a monitor scaled), the scale events apart from
        the monitor's, in restore/ of the work directory."""
        now = self.sizes()
        if now != sizes:
            print(f"restoring the pools to {sizes} (now {now}) ...", flush=True)
        state_dir = f"tenfold_state_dir={self.workdir / 'restore'}"
        for pool, replicas in sizes.items():
            if now.get(pool) != replicas:
                self.scale(pool, replicas, "-e", "trigger=manual", "-e", state_dir)

    def events(self) -> list[dict]:
        """The scale events of the runs started here (tenfold_state_dir is the work directory)."""
        return json_lines(self.workdir / "scale-events.jsonl")

    # --- its containers ---------------------------------------------------------------------------
    def containers(self, *filters: str, every: bool = False) -> list[str]:
        """Names of the stack's containers (running ones, or `every` one), with more `docker ps` filters."""
        args = ["ps", *(["-a"] if every else []), "--filter", f"label={LABEL_STACK}={self.name}"]
        for extra in filters:
            args += ["--filter", extra]
        return command_output("docker", *args, "--format", "{{.Names}}").split()

    def sizes(self) -> dict[str, int]:
        """Running replicas per pool; warm replicas are not a pool's size."""
        return {
            pool: len([n for n in self.containers(f"label={LABEL_POOL}={pool}") if not n.endswith("-warm")])
            for pool in POOLS
        }

    def leftovers(self) -> list[str]:
        """What the stack left on this machine: containers, networks and its host directories."""
        networks = command_output("docker", "network", "ls", "--format", "{{.Name}}").split()
        found = self.containers(every=True) + [n for n in networks if n.startswith(f"{self.name}-")]
        return found + [
            p for p in (f"/etc/tenfold/{self.name}", f"/var/log/tenfold/{self.name}") if Path(p).exists()
        ]

    @contextmanager
    def up(self, port_wait: float = 120.0) -> Iterator[Stack]:
        """The stack brought up with site.yml (after removing an earlier run's leftovers), and removed with
        down.yml on the way out, Ctrl-C ignored until that is done; fails when something is left."""
        print(f"removing leftovers of an earlier run of stack {self.name}, if any", flush=True)
        self.run("playbooks/down.yml", timeout=600)
        taken = answering(self.ports())
        if taken:
            raise BenchError(f"ports in use on 127.0.0.1, not starting stack {self.name}: {taken}")
        # A connection from 127.0.0.1 may hold a port in the ephemeral range for a while: wait it out.
        wait_for_ports(self.ports(3), port_wait)
        try:
            print(f"bringing up stack {self.name} (site.yml)", flush=True)
            self.run("site.yml", timeout=1800)
            yield self
        finally:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                print(
                    f"removing stack {self.name} (down.yml; Ctrl-C is ignored until it is done)", flush=True
                )
                try:
                    self.run("playbooks/down.yml", timeout=600)
                except BenchError as exc:
                    print(f"teardown failed: {exc}", file=sys.stderr)
            finally:
                signal.signal(signal.SIGINT, previous)
        left = self.leftovers()
        if left:
            raise BenchError(f"left behind after down.yml: {left}")


# --- load sources ---------------------------------------------------------------------------------
def parse_sources(text: str) -> list[str]:
    """`127.0.3.1-127.0.3.16` or `a,b,c`: loopback addresses only."""
    found: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, _, last = part.partition("-")
        try:
            low = ipaddress.IPv4Address(first)
            high = ipaddress.IPv4Address(last) if last else low
        except ValueError:
            raise BenchError(f"--sources: {part!r} is not an address or a range a-b") from None
        if high < low or int(high) - int(low) > 255:
            raise BenchError(f"--sources: {part!r} is not a range of at most 256 addresses")
        found += [str(ipaddress.IPv4Address(i)) for i in range(int(low), int(high) + 1)]
    for address in found:
        if not ipaddress.ip_address(address).is_loopback:
            raise BenchError(f"--sources: {address} is not a loopback address")
    return found


def outside_allowlist(sources: Sequence[str], allowlist: Sequence[str]) -> list[str]:
    """The sources the LB's rate and connection limits apply to."""
    networks = []
    for entry in allowlist:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return [s for s in sources if not any(ipaddress.ip_address(s) in n for n in networks)]
