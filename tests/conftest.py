"""Shared test setup: the plugins' Python is importable without Ansible's plugin loader."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
# The monitor package is installed (make venv); the plugins' own Python is not a package.
for sub in ("plugins/module_utils", "plugins/filter"):
    path = str(ROOT / sub)
    if path not in sys.path:
        sys.path.insert(0, path)
# The scripts (the benchmark harness benchkit, reliability_report, fleetlib...) and the stack drivers of
# tests/integration (helpers, which the fleet suite uses too), last: nothing there may shadow a test module.
for sub in ("scripts", "tests/integration"):
    if str(ROOT / sub) not in sys.path:
        sys.path.append(str(ROOT / sub))


def load_plugin(kind: str, name: str) -> ModuleType:
    """Import plugins/<kind>/<name>.py, with the project's module_utils reachable as ansible.module_utils.*"""
    import ansible.module_utils

    for util in (ROOT / "plugins" / "module_utils").glob("*.py"):
        full = f"ansible.module_utils.{util.stem}"
        if full not in sys.modules:
            spec = importlib.util.spec_from_file_location(full, util)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            setattr(ansible.module_utils, util.stem, module)
            spec.loader.exec_module(module)
    spec = importlib.util.spec_from_file_location(
        f"tenfold_{kind}_{name}", ROOT / "plugins" / kind / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
