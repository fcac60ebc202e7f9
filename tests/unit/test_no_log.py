"""The pools' environment values never show in Ansible's output: tenfold.stack.pool takes them no_log, run for
real at -vvv (check mode, a stack that does not exist: nothing is created), its --diff names changed
environment keys and never their values (in check mode and in a real run of one replica), and no other module
gets them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import COLLECTION

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
    output = pool_run(args, "--check", "-vvv")
    assert "sekrit-token-4711" not in output
    assert '"API_TOKEN": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in output
    assert '"max_concurrency": 7' in output


def test_the_pool_list_other_modules_get_holds_no_environment():
    pools = yaml.safe_load((COLLECTION / "roles/app_pools/vars/main.yml").read_text())["__app_pools_pools"]
    assert all("env" not in pool for pool in pools)


def pool_run(args: dict, *flags: str) -> str:
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible"),
            "localhost",
            "-m",
            "tenfold.stack.pool",
            "-a",
            json.dumps(args),
            *flags,
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def has_image(image: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return found.returncode == 0


@pytest.mark.skipif(not has_image("tenfold/backend:local"), reason="needs the image tenfold/backend:local")
def test_the_diff_names_changed_env_keys_and_never_a_value_in_check_mode_and_for_real():
    secrets = ["first-sekrit-4711", "rotated-sekrit-4712", "added-sekrit-4713"]
    args = {
        "stack": "nologdiff",
        "pool": "backend",
        "replicas": 1,
        "image": "tenfold/backend:local",
        "port_base": 39100,
        "env": {"API_TOKEN": secrets[0], "OLD_KEY": "old-sekrit-4714"},
        "health_timeout": 60,
        "stop_timeout": 2,
    }
    changed = {**args, "env": {"API_TOKEN": secrets[1], "NEW_KEY": secrets[2]}}
    try:
        created = pool_run(args, "--diff", "-vvv")
        assert "nologdiff-backend-1: created" in created
        for flags in (("--check", "--diff", "-vvv"), ("--diff", "-vvv")):
            output = pool_run(changed, *flags)
            assert "nologdiff-backend-1: recreated" in output
            # Exactly the environment's keys changed, and nothing else is reported as changed.
            report = output[output.index("nologdiff-backend-1: recreated") :].splitlines()[1:4]
            assert [line.strip() for line in report] == [
                "env added: NEW_KEY",
                "env removed: OLD_KEY",
                "env changed: API_TOKEN",
            ]
            for value in [*secrets, "old-sekrit-4714"]:
                assert value not in output
            # Ansible masks a no_log value that reaches the output: the diff must not need it.
            assert "********" not in output
    finally:
        pool_run({**args, "replicas": 0})
