"""Shared test setup: the pure plugin code is importable without Ansible's loader."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("plugins/module_utils", "plugins/filter"):
    path = str(ROOT / sub)
    if path not in sys.path:
        sys.path.insert(0, path)
