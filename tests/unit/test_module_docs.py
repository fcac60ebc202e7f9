"""Every module of the collection documents itself: ansible-doc renders it, from the checkout and from the
built collection installed elsewhere, and its options match its argument_spec."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import COLLECTION, ROOT, build_collection, load_plugin

BIN = ROOT / ".venv" / "bin"
MODULES = sorted(
    p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py") if not p.stem.startswith("_")
)
OTHER_PLUGINS = [
    ("callback", "scale_events"),
    ("lookup", "state"),
    ("filter", "members"),
    ("filter", "pool_sizes"),
    ("filter", "docker_hosts"),
    ("filter", "seconds"),
    ("filter", "not_ip"),
    ("filter", "bad_forms"),
    ("filter", "tls_problems"),
    ("filter", "monitor_pools"),
    ("filter", "monitor_problems"),
]


def fqcn(name: str) -> str:
    return f"tenfold.stack.{name}"


def test_every_module_is_covered():
    assert {"drain", "lb_members", "lb_update", "pool", "lock", "backup"} <= set(MODULES)


def ansible_doc(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = env if env is not None else {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return subprocess.run(
        [str(BIN / "ansible-doc"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@functools.cache
def rendered_modules() -> dict:
    """ansible-doc's JSON of every module (its doc fragments merged), in one run."""
    result = ansible_doc("--json", *map(fqcn, MODULES))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders_the_module(name):
    doc = rendered_modules()[fqcn(name)]
    assert doc["doc"]["short_description"]
    assert doc["examples"].strip()
    assert doc["return"]


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_match_the_argument_spec(name):
    module = load_plugin("modules", name)
    documented = rendered_modules()[fqcn(name)]["doc"]["options"]
    spec = module.argument_spec()
    assert set(documented) == set(spec)
    for option, doc in documented.items():
        assert doc.get("type", "str") == spec[option].get("type", "str"), option
        assert doc.get("default") == spec[option].get("default"), option
        assert doc.get("choices") == spec[option].get("choices"), option


@pytest.mark.parametrize(("kind", "name"), OTHER_PLUGINS)
def test_ansible_doc_renders_the_other_plugins(kind, name):
    result = ansible_doc("-t", kind, "--json", fqcn(name))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[fqcn(name)]["doc"]["short_description"]


def outside() -> dict[str, str]:
    """An environment without the checkout's Ansible settings (run it outside the checkout, too)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The collection as `make collection` builds it, installed into a collections directory of its own
    (--force: this copy, whatever else is installed)."""
    work = tmp_path_factory.mktemp("collection")
    tarball = build_collection(work)
    target = work / "collections"
    install = subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            "--force",
            str(tarball),
            "-p",
            str(target),
        ],
        cwd=work,
        env=outside(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return target


def test_the_installed_collection_documents_every_module_from_anywhere(installed, tmp_path):
    """Outside the checkout, with no ansible.cfg: only ANSIBLE_COLLECTIONS_PATH says where it is."""
    env = {**outside(), "ANSIBLE_COLLECTIONS_PATH": str(installed)}
    result = ansible_doc("--json", *map(fqcn, MODULES), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    assert set(docs) == set(map(fqcn, MODULES))
    for name, doc in docs.items():
        assert doc["doc"]["short_description"], name
        assert doc["doc"]["filename"].startswith(str(installed)), doc["doc"]["filename"]
    other = ansible_doc("-t", "callback", "--json", fqcn("scale_events"), cwd=tmp_path, env=env)
    assert other.returncode == 0, other.stderr
