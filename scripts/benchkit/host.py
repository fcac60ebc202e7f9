# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""This machine: its facts as a benchmark records them, its CPU load, its ports, and bounded processes."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and where its log is."""


def tool(name: str) -> str:
    """The virtual environment's `name` (ansible-playbook, locust, ...), else the one on PATH."""
    local = BIN / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def command_output(*cmd: str, stderr: bool = False) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stderr if stderr else done.stdout).strip() if done.returncode == 0 else ""


def proc_field(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""


def os_name() -> str:
    try:
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', Path("/etc/os-release").read_text(), re.M)
    except OSError:
        match = None
    return match.group(1) if match else platform.system()


def source_commit(watched: Sequence[str]) -> str:
    """HEAD, and the files among `watched` that differ from it (others may work in this tree)."""
    commit = command_output("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD") or "unknown"
    status = command_output("git", "-C", str(ROOT), "status", "--porcelain", "--", *watched)
    dirty = [f"`{line[3:]}`" for line in status.splitlines()]
    if not dirty:
        return commit
    more = f" and {len(dirty) - 4} more" if len(dirty) > 4 else ""
    return f"{commit}, with uncommitted changes in {', '.join(dirty[:4])}{more}"


def machine(watched: Sequence[str], **extra: str) -> dict[str, str]:
    """The machine a benchmark runs on, measured: the doc's machine table shows these, and its prose
    (how many cores the stack and the generator share) reads them from here."""
    mem_kib = proc_field("/proc/meminfo", "MemTotal").split()
    ansible = re.search(r"core ([\w.]+)", command_output(tool("ansible-playbook"), "--version"))
    nginx = re.search(
        r"nginx/([\w.]+)",
        command_output(
            "docker", "run", "--rm", "--network", "none", "tenfold/nginx:local", "nginx", "-v", stderr=True
        ),
    )
    return {
        "nproc": command_output("nproc") or str(len(os.sched_getaffinity(0))),
        "memory": f"{int(mem_kib[0]) / 1024**2:.1f} GiB" if mem_kib else "unknown",
        "CPU": proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "OS": os_name(),
        "kernel": platform.release(),
        "Docker server": command_output("docker", "version", "--format", "{{.Server.Version}}") or "unknown",
        "nginx": nginx.group(1) if nginx else "unknown",
        "ansible-core": ansible.group(1) if ansible else "unknown",
        "Python": platform.python_version(),
        **extra,
        "commit": source_commit(watched),
    }


# --- CPU ------------------------------------------------------------------------------------------
def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat (iowait counts as idle)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return (0, 0)
    idle = fields[3] + fields[4]
    return (sum(fields) - idle, sum(fields))


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


def children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(threshold: float, max_wait: float, sample: float = 3.0) -> bool:
    """Wait, at most max_wait seconds, until the machine's CPU was less than threshold busy over `sample`
    seconds: the machine is shared, and a run should not start in the middle of someone else's burst.
    Returns whether it was quiet (a run that starts after the wait anyway is counted as such)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_cpu()
        time.sleep(sample)
        share = busy_share(before, machine_cpu())
        if share is None or share < threshold:
            return True
        if time.monotonic() >= deadline:
            return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str = "", step: float = 0.5) -> float:
    """Poll `predicate` until it is true (bounded: BenchError after `timeout` s); returns when it was."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"not within {timeout:g} s: {what or predicate}")
        time.sleep(step)
    return time.monotonic()


# --- ports ----------------------------------------------------------------------------------------
def answering(ports: Sequence[int]) -> list[int]:
    """The ports something on 127.0.0.1 accepts connections on."""
    taken = []
    for port in ports:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def port_busy(port: int) -> bool:
    """Whether 127.0.0.1:port cannot be bound the way Docker's proxy binds it (SO_REUSEADDR, so only a
    listener or a connection using that local port blocks it, not TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_for_ports(ports: Sequence[int], max_wait: float) -> float:
    """Wait, at most max_wait seconds, until every port can be bound; returns the seconds waited."""
    began = time.monotonic()
    while any(port_busy(port) for port in ports) and time.monotonic() - began < max_wait:
        time.sleep(0.5)
    return time.monotonic() - began


def ephemeral_range() -> tuple[int, int] | None:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


# --- processes ------------------------------------------------------------------------------------
def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: the benches' cleanup (teardown, stopping their children) runs for both."""
    raise KeyboardInterrupt


def stop_process(proc: subprocess.Popen) -> None:
    """SIGINT to the process group (ansible's and locust's own Ctrl-C), then SIGTERM, then SIGKILL;
    bounded. The process must have been started with start_new_session=True."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: Sequence[str], log: Path, timeout: float, **popen: object) -> int:
    """`cmd` in a session of its own, its output to `log`; stopped after `timeout` seconds (BenchError) or on
    Ctrl-C (re-raised). Returns its exit code."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **popen,
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise BenchError(
                f"{' '.join(map(str, cmd))} took longer than {timeout:g} s (log: {log})"
            ) from None
        except KeyboardInterrupt:
            stop_process(proc)
            raise


@contextmanager
def worktree(commit: str, path: Path) -> Iterator[Path]:
    """A checkout of `commit` at `path` (an earlier playbook or monitor), removed on the way out."""
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def json_lines(path: Path) -> list[dict]:
    """The JSON lines of a log that may not exist yet, skipping any that is not JSON (a partial last one)."""
    if not path.exists():
        return []
    found = []
    for raw in path.read_text().splitlines():
        try:
            found.append(json.loads(raw))
        except ValueError:
            continue
    return found
