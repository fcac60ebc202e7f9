"""Every custom module documents itself: ansible-doc renders it and its options match its argument_spec."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import load_plugin

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if not p.stem.startswith("_"))


def test_every_module_is_covered():
    assert {"tenfold_drain", "tenfold_lb_members", "tenfold_lb_update"} <= set(MODULES)


def ansible_doc(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-doc"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders_the_module(name):
    result = ansible_doc("--json", name)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[name]
    assert doc["doc"]["short_description"]
    assert doc["examples"].strip()
    assert doc["return"]


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_match_the_argument_spec(name):
    module = load_plugin("modules", name)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    spec = module.argument_spec()
    assert set(documented) == set(spec)
    for option, doc in documented.items():
        assert doc.get("type", "str") == spec[option].get("type", "str"), option
        assert doc.get("default") == spec[option].get("default"), option
        assert doc.get("choices") == spec[option].get("choices"), option


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("callback", "tenfold_scale_events"),
        ("lookup", "tenfold_state"),
        ("filter", "tenfold_members"),
        ("filter", "tenfold_seconds"),
        ("filter", "tenfold_not_ip"),
        ("filter", "tenfold_bad_forms"),
        ("filter", "tenfold_tls_problems"),
    ],
)
def test_ansible_doc_renders_the_other_plugins(kind, name):
    result = ansible_doc("-t", kind, "--json", name)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[name]["doc"]["short_description"]
