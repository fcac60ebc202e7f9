"""The pools' environment values never show in Ansible's output: tenfold_pool takes them no_log, run for real
at -vvv (check mode, a stack that does not exist: nothing is created), and no other module gets them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="needs the Docker engine")


def test_env_values_are_masked_and_max_concurrency_is_not():
    args = {
        "stack": "nologtest",
        "pool": "backend",
        "replicas": 0,
        "image": "tenfold/backend:local",
        "port_base": 39000,
        "env": {"API_TOKEN": "sekrit-token-4711"},
        "max_concurrency": 7,
    }
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible"),
            "localhost",
            "-m",
            "tenfold_pool",
            "-a",
            json.dumps(args),
            "--check",
            "-vvv",
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "sekrit-token-4711" not in output
    assert '"API_TOKEN": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in output
    assert '"max_concurrency": 7' in output


def test_the_pool_list_other_modules_get_holds_no_environment():
    pools = yaml.safe_load((ROOT / "roles/app_pools/vars/main.yml").read_text())["__app_pools_pools"]
    assert all("env" not in pool for pool in pools)
