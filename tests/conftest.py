"""Shared test setup: the collection's plugins load without Ansible's plugin loader."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The scripts (the benchmark harness benchkit, reliability_report, fleetlib...) and the stack drivers of
# tests/integration (helpers, which the fleet suite uses too), last: nothing there may shadow a test module.
for sub in ("scripts", "tests/integration"):
    if str(ROOT / sub) not in sys.path:
        sys.path.append(str(ROOT / sub))

# The collection tenfold.stack, as the checkout holds it (ansible.cfg's collections_path).
from helpers import COLLECTION  # noqa: E402


def load_plugin(kind: str, name: str) -> ModuleType:
    """The collection's plugins/<kind>/<name>.py as a module. Only its module_utils are a package outside
    Ansible (pyproject.toml installs them, as ansible_collections.tenfold.stack.plugins.module_utils), and
    plugins import nothing else of the collection's, so loading the file is enough."""
    spec = importlib.util.spec_from_file_location(
        f"tenfold_stack_{kind}_{name}", COLLECTION / "plugins" / kind / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_collection(output: Path) -> Path:
    """`ansible-galaxy collection build` of the collection into `output` (as `make collection` does, with the
    checkout's Ansible settings left out): the tarball."""
    run = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible-galaxy"),
            "collection",
            "build",
            str(COLLECTION),
            "--output-path",
            str(output),
            "--force",
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    return output / f"tenfold-stack-{version}.tar.gz"
