# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""What the benchmark scripts share: the machine they ran on, its CPU load, commands, leftovers, the doc."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ansible_collections.tenfold.stack.plugins.module_utils.pool import LABEL_STACK

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
DOC = ROOT / "docs" / "benchmarks.md"
# The monitor's metrics log and decisions log in a bench's or a test's work directory (monitor_settings).
MONITOR_METRICS = "metrics.jsonl"
MONITOR_DECISIONS = "decisions.jsonl"
INTRO = """# Benchmarks

Measured figures of tenfold, each with the date, the machine it ran on and the exact command that produced
it. Every figure in this file is written by a script in `scripts/`, never by hand: to reproduce or refresh a
section, run the command it names from the repository root with the virtual environment active
(`. .venv/bin/activate`). Each script rewrites only its own section, between its `<!-- <name>:start -->`
and `<!-- <name>:end -->` markers, and leaves the rest of the file as it is.
"""


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and where its log is."""


def ansible_playbook() -> str:
    local = BIN / "ansible-playbook"
    return str(local) if local.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")


def command_output(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def proc_field(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""


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


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.system()
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return match.group(1) if match else platform.system()


def source_commit(watched: Sequence[str]) -> str:
    """HEAD, and the files among `watched` that differ from it (others may work in this tree)."""
    commit = command_output("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD") or "unknown"
    status = command_output("git", "-C", str(ROOT), "status", "--porcelain", "--", *watched)
    dirty = [line[3:] for line in status.splitlines()]
    if not dirty:
        return commit
    shown = ", ".join(f"`{path}`" for path in dirty[:4]) + (
        f" and {len(dirty) - 4} more" if len(dirty) > 4 else ""
    )
    return f"{commit}, with uncommitted changes in {shown}"


def docker_names(*args: str, template: str = "{{.Names}}") -> list[str]:
    """Names that `docker <args>` lists (containers by default; pass template="{{.Name}}" for networks)."""
    return command_output("docker", *args, "--format", template).split()


def machine(watched: Sequence[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The machine a benchmark ran on, as its doc section shows it."""
    mem_kib = proc_field("/proc/meminfo", "MemTotal").split()
    ansible_version = command_output(ansible_playbook(), "--version").splitlines()
    core = re.search(r"core ([\w.]+)", ansible_version[0]) if ansible_version else None
    return {
        "nproc": command_output("nproc") or str(len(os.sched_getaffinity(0))),
        "memory": f"{int(mem_kib[0]) / 1024**2:.1f} GiB" if mem_kib else "unknown",
        "CPU": proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "OS": os_name(),
        "kernel": platform.release(),
        "Docker server": command_output("docker", "version", "--format", "{{.Server.Version}}") or "unknown",
        "ansible-core": core.group(1) if core else "unknown",
        "Python": platform.python_version(),
        **(extra or {}),
        "commit": source_commit(watched),
    }


def machine_table(facts: dict[str, str]) -> list[str]:
    """The machine a benchmark ran on, as a Markdown table."""
    return ["| machine | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in facts.items())]


def section_head(title: str, script: str, when: str, command: str, facts: dict[str, str]) -> list[str]:
    """The start of a doc section: its title, who wrote it when, the command, the machine."""
    return [
        f"## {title}",
        "",
        f"Written by `{script}` on {when}:",
        "",
        "```bash",
        command,
        "```",
        "",
        *machine_table(facts),
        "",
    ]


def monitor_settings(
    stack: str,
    status_port: int,
    workdir: Path,
    state_dir: Path,
    scale_command: list[str],
    **settings: object,
) -> dict[str, object]:
    """Settings of a `python -m tenfold_monitor run` that watches `stack` and keeps its logs in `workdir`
    (metrics.jsonl, decisions.jsonl, scale-runs.log, state.json), not in the project's logs/; the scale lock
    and events it shares with the scale runs are in `state_dir` (their tenfold_state_dir)."""
    return {
        "stack": stack,
        "project_dir": str(ROOT),
        "lb_status_url": f"http://127.0.0.1:{status_port}/status",
        "stub_status_url": f"http://127.0.0.1:{status_port}/nginx_status",
        "state_dir": str(state_dir),
        "metrics_log": str(workdir / MONITOR_METRICS),
        "decisions_log": str(workdir / MONITOR_DECISIONS),
        "scale_log": str(workdir / "scale-runs.log"),
        "state_file": str(workdir / "state.json"),
        "scale_command": scale_command,
        **settings,
    }


def run_playbook(name: str, vars_file: Path, log: Path, checkout: Path = ROOT) -> None:
    """A playbook of `checkout` (this one, or a worktree of another commit, with its own ansible.cfg) on
    the stack of `vars_file`; its output goes to `log`."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(checkout / "ansible.cfg")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    with log.open("w") as out:
        rc = subprocess.run(
            [ansible_playbook(), name, "-e", f"@{vars_file}"],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        ).returncode
    if rc != 0:
        raise BenchError(f"{name} of {checkout} failed (log: {log})")


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


def leftovers(stack: str) -> list[str]:
    """What a stack left on this machine: containers, networks and its host directories."""
    found = docker_names("ps", "-a", "--filter", f"label={LABEL_STACK}={stack}")
    found += [n for n in docker_names("network", "ls", template="{{.Name}}") if n.startswith(f"{stack}-")]
    found += [p for p in (f"/etc/tenfold/{stack}", f"/var/log/tenfold/{stack}") if Path(p).exists()]
    return found


def write_section(name: str, section: str, path: Path = DOC) -> None:
    """Replace the doc's section `name` (between its markers), or add it; everything else stays as it is.

    Other scripts rewrite their own sections of the same file, so the new text replaces it in one rename.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}"
    if path.exists():
        text = path.read_text()
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip() + f"\n\n{block}\n"
    else:
        text = f"{INTRO}\n{block}\n"
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(text)
    os.replace(staged, path)
