"""AWX readiness: pinned collections consistent everywhere, an execution environment ansible-builder accepts,
an awx/ configuration that passes syntax check and ansible-lint, and playbooks that never prompt."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import ansible_collections
import pytest
import yaml
from conftest import COLLECTION, build_collection

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
# The collections that ansible-playbook here sees: those bundled with the PyPI ansible package.
COLLECTIONS = Path(next(iter(ansible_collections.__path__)))
HAS_AWX = (COLLECTIONS / "awx" / "awx" / "MANIFEST.json").exists()
NEEDS_AWX = pytest.mark.skipif(
    not HAS_AWX, reason="the awx.awx collection is not installed (not bundled here)"
)


def env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}"}


def collections(path: Path) -> dict[str, str]:
    """{name: version} of the Galaxy collections a requirements file lists (not tenfold.stack's tarball)."""
    return {
        c["name"]: str(c["version"])
        for c in yaml.safe_load(path.read_text())["collections"]
        if "version" in c
    }


def tarball() -> str:
    """The path (from the checkout's root) of the tarball `make collection` builds of tenfold.stack."""
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    return f"build/tenfold-stack-{version}.tar.gz"


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^\s#]+)", line.strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_the_collections_are_pinned_like_the_bundled_copies():
    awx = collections(ROOT / "collections" / "requirements.yml")
    assert set(awx) >= {
        "community.docker",
        "community.crypto",
        "community.general",
        "ansible.posix",
        "awx.awx",
    }
    for name, version in awx.items():
        manifest = COLLECTIONS / name.replace(".", "/") / "MANIFEST.json"
        if manifest.exists():
            assert json.loads(manifest.read_text())["collection_info"]["version"] == version, name


def test_requirements_and_the_execution_environment_install_the_built_collection():
    entries = yaml.safe_load((ROOT / "collections" / "requirements.yml").read_text())["collections"]
    assert {"name": tarball(), "type": "file"} in entries
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert {"src": tarball(), "dest": "build"} in ee["additional_build_files"]


def test_execution_environment_pins_what_the_project_pins():
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert deps["galaxy"] == "collections/requirements.yml"
    project = pins(ROOT / "requirements.txt") | pins(ROOT / "requirements-dev.txt")
    ee_pins = {}
    for line in deps["python"]:
        name, _, version = line.partition("==")
        ee_pins[name.lower()] = version
    ee_pins |= dict(
        [deps["ansible_core"]["package_pip"].split("=="), deps["ansible_runner"]["package_pip"].split("==")]
    )
    assert {"docker", "requests", "ansible-core", "ansible-runner"} <= set(ee_pins)
    for name, version in ee_pins.items():
        assert project.get(name) == version, (
            f"{name}: {version} in execution-environment.yml, {project.get(name)}"
        )


def test_ansible_builder_creates_the_build_context(tmp_path):
    build_collection(ROOT / "build")
    context = tmp_path / "context"
    run = subprocess.run(
        [str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", str(context)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [containerfile] = [p for p in (context / "Containerfile", context / "Dockerfile") if p.exists()]
    text = containerfile.read_text()
    assert "quay.io/ansible/awx-ee:24.6.1" in text
    assert "ansible-core==2.19.14" in text
    assert collections(context / "_build" / "requirements.yml") == collections(
        ROOT / "collections" / "requirements.yml"
    )
    assert "docker==7.2.0" in (context / "_build" / "requirements.txt").read_text()
    assert "openssh-clients" in (context / "_build" / "bindep.txt").read_text()
    # the collection, where requirements.yml's relative path finds it from the galaxy stage's directory
    assert (context / "_build" / tarball()).is_file()
    # the monitor package, built from the same files as the venv's (pyproject.toml's package-dir)
    package = context / "_build" / "tenfold"
    for path in (
        "pyproject.toml",
        "monitor/tenfold_monitor/__main__.py",
        "collections/ansible_collections/tenfold/stack/plugins/module_utils/policy.py",
    ):
        assert (package / path).is_file(), path
    assert "pip install --no-cache-dir --no-deps /tmp/tenfold" in text


@NEEDS_AWX
def test_awx_playbook_passes_syntax_check_and_ansible_lint():
    syntax = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "awx/configure.yml"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    lint = subprocess.run(
        [
            str(
                BIN / "ansible-lint",
            ),
            "--profile",
            "production",
            "awx/",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_awx_configuration_has_every_job_template_and_schedule():
    settings = yaml.safe_load((ROOT / "awx" / "vars.yml").read_text())
    templates = {t["name"]: t for t in settings["tenfold_awx_job_templates"]}
    assert set(templates) >= {"site", "scale up", "scale down", "backup", "restore", "report", "scale check"}
    for name in ("scale up", "scale down"):
        assert templates[name]["playbook"] == "scale.yml"
        assert [q["variable"] for q in templates[name]["survey"]] == ["pool", "step"]
    assert [q["variable"] for q in templates["restore"]["survey"]] == ["backup"]
    assert templates["scale up"]["extra_vars"]["direction"] == "up"
    assert templates["scale down"]["extra_vars"]["direction"] == "down"
    for template in templates.values():
        assert (ROOT / template["playbook"]).is_file(), template["playbook"]
    tasks = yaml.safe_load((ROOT / "awx" / "configure.yml").read_text())[0]["tasks"]
    schedules = [t["awx.awx.schedule"]["unified_job_template"] for t in tasks if "awx.awx.schedule" in t]
    assert sorted(schedules) == sorted(
        [
            "{{ tenfold_awx_prefix }} backup",
            "{{ tenfold_awx_prefix }} report",
            "{{ tenfold_awx_prefix }} scale check",
        ]
    )


def test_a_launch_may_set_only_the_variables_its_survey_documents():
    settings = yaml.safe_load((ROOT / "awx" / "vars.yml").read_text())
    [task] = [
        t
        for t in yaml.safe_load((ROOT / "awx" / "configure.yml").read_text())[0]["tasks"]
        if "awx.awx.job_template" in t
    ]
    template = task["awx.awx.job_template"]
    assert template["ask_variables_on_launch"] is False  # AWX refuses any extra var but the survey's
    assert "item.survey" in template["survey_spec"] and "item.survey" in template["survey_enabled"]
    for job in settings["tenfold_awx_job_templates"]:
        assert "ask_variables" not in job, job["name"]
        for question in job["survey"]:
            assert question["type"] in ("text", "integer", "multiplechoice"), question
            assert question["question_description"], question  # documented where it is asked
            if question["type"] == "text":
                assert question["max"] <= 1024, question
    schedules = [
        t["awx.awx.schedule"]
        for t in yaml.safe_load((ROOT / "awx" / "configure.yml").read_text())[0]["tasks"]
        if "awx.awx.schedule" in t
    ]
    assert all("extra_data" not in schedule for schedule in schedules)


def playbooks() -> list[Path]:
    found = [*ROOT.glob("*.yml"), *(ROOT / "playbooks").glob("*.yml"), *(ROOT / "awx").glob("*.yml")]
    return sorted(p for p in found if isinstance(yaml.safe_load(p.read_text()), list))


@pytest.mark.parametrize("path", playbooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_playbook_never_prompts(path):
    text = path.read_text()
    assert "vars_prompt" not in text
    for play in yaml.safe_load(text):
        for task in play.get("tasks", []) + play.get("pre_tasks", []) + play.get("post_tasks", []):
            pause = task.get("ansible.builtin.pause", task.get("pause"))
            assert pause is None or "seconds" in pause or "minutes" in pause, task.get("name")


def test_no_role_task_waits_for_a_person():
    for path in sorted((COLLECTION / "roles").rglob("tasks/*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            pause = task.get("ansible.builtin.pause", task.get("pause"))
            assert pause is None or "seconds" in pause or "minutes" in pause, f"{path}: {task.get('name')}"
            assert "prompt" not in (pause or {}), f"{path}: {task.get('name')}"
