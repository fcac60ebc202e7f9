"""scale.yml and backup.yml under ansible-runner, with a private data directory laid out as AWX lays it out
(env/extravars, env/envvars, env/settings, inventory/hosts, a copy of the project in project/, the job's
environment variables): they run without a prompt, the runner records their events, and the
tenfold.stack.scale_events callback writes the scale run with trigger awx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.tenfold.stack.plugins.module_utils import backup as tb
from conftest import pool_containers
from helpers import BIN, ROOT, STACK_VARS, events_count, events_since

pytestmark = pytest.mark.integration


@pytest.fixture
def private_data_dir(stack, tmp_path):
    pdd = tmp_path / "pdd"
    shutil.copytree(
        ROOT,
        pdd / "project",
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "logs", ".pytest_cache", ".ruff_cache", "__pycache__"),
    )
    (pdd / "inventory").mkdir()
    shutil.copy(ROOT / "inventories" / "local" / "hosts.yml", pdd / "inventory" / "hosts")
    (pdd / "env").mkdir()
    (pdd / "env" / "settings").write_text(
        yaml.safe_dump({"suppress_ansible_output": True, "job_timeout": 600})
    )
    envvars = {"JOB_ID": "4242", "AWX_HOST": "https://awx.invalid"}
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    return pdd


def runner(pdd: Path, playbook: str, ident: str, extravars: dict) -> subprocess.CompletedProcess:
    """ansible-runner run, as AWX calls it: extra vars in env/extravars, no ANSIBLE_CONFIG (the project's
    ansible.cfg is found in the project directory), stdin closed."""
    stack_vars = yaml.safe_load(STACK_VARS.read_text())
    (pdd / "env" / "extravars").write_text(yaml.safe_dump({**stack_vars, **extravars}))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    environ["PATH"] = f"{BIN}:{environ.get('PATH', '')}"
    return subprocess.run(
        [str(BIN / "ansible-runner"), "run", str(pdd), "-p", playbook, "--ident", ident],
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def job_events(pdd: Path, ident: str) -> list[dict]:
    folder = pdd / "artifacts" / ident / "job_events"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_scale_runs_under_ansible_runner_and_records_its_event(engine, stack, private_data_dir):
    pdd = private_data_dir
    backends = len(pool_containers(engine, stack, "backend"))
    before = events_count()
    run = runner(pdd, "scale.yml", "scale", {"pool": "backend", "replicas": backends})
    status = (pdd / "artifacts" / "scale" / "status").read_text().strip()
    stdout = (pdd / "artifacts" / "scale" / "stdout").read_text()
    assert run.returncode == 0 and status == "successful", stdout[-4000:] + run.stderr[-2000:]
    kinds = {e["event"] for e in job_events(pdd, "scale")}
    assert {"playbook_on_start", "runner_on_ok", "playbook_on_stats"} <= kinds
    # The project copy's run records where every run of the stack does: the state host's, not its own logs/.
    [event] = events_since(before)
    assert event["stack"] == stack.name
    assert event["trigger"] == "awx"
    assert event["result"] == "ok"
    assert [p["target"] for p in event["pools"] if p["pool"] == "backend"] == [backends]


def test_backup_runs_under_ansible_runner(stack, private_data_dir, tmp_path):
    pdd = private_data_dir
    backups = tmp_path / "backups"
    run = runner(pdd, "backup.yml", "backup", {"backup_dir": str(backups), "backup_retention": 1})
    status = (pdd / "artifacts" / "backup" / "status").read_text().strip()
    stdout = (pdd / "artifacts" / "backup" / "stdout").read_text()
    assert run.returncode == 0 and status == "successful", stdout[-4000:] + run.stderr[-2000:]
    assert "playbook_on_stats" in {e["event"] for e in job_events(pdd, "backup")}
    [archive] = tb.backups(str(backups), stack.name)
    manifest = tb.verify(archive, stack.name)
    assert {"nginx", "tls", "inventory-1"} <= set(manifest.sources)
    assert manifest.sources["inventory-1"]["path"].startswith(str(pdd / "inventory"))
