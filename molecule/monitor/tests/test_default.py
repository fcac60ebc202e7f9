"""The monitor role: settings the monitor loads, a verified systemd unit, bad input refused before writing."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PYTHON = ROOT / ".venv" / "bin" / "python"
MONITOR = ROOT / ".venv" / "bin" / "tenfold-monitor"
SETTINGS = "/etc/tenfold/molmon/monitor.json"
UNIT = "/etc/tenfold/molmon/systemd/tenfold-monitor-molmon.service"
BAD = "/etc/tenfold/molmon-bad"

# Loads a settings file with the monitor itself; prints the settings it holds and the fields it knows.
LOAD = """
import dataclasses, json, sys
from pathlib import Path
from tenfold_monitor.service import Settings
from ansible_collections.tenfold.stack.plugins.module_utils.policy import PolicyConfig
settings = Settings.load(Path(sys.argv[1]))
print(json.dumps({
    "settings": dataclasses.asdict(settings),
    "settings_fields": sorted(Settings.__dataclass_fields__),
    "policy_fields": sorted(f.name for f in dataclasses.fields(PolicyConfig)),
}))
"""


def load_with_the_monitor(host, path: str) -> dict:
    return json.loads(host.check_output(f"{PYTHON} -c '{LOAD}' {path}"))


def unit_lines(host) -> list[str]:
    return host.file(UNIT).content_string.splitlines()


def test_settings_load_with_the_monitor_and_hold_exactly_its_fields(host):
    settings = host.file(SETTINGS)
    assert settings.is_file and settings.mode == 0o644
    loaded = load_with_the_monitor(host, SETTINGS)
    assert sorted(json.loads(settings.content_string)) == loaded["settings_fields"]
    for pool in loaded["settings"]["pools"].values():
        assert sorted(pool) == loaded["policy_fields"]


def test_settings_carry_the_inventory_bounds_and_the_stack(host):
    settings = load_with_the_monitor(host, SETTINGS)["settings"]
    assert settings["stack"] == "molmon"
    assert settings["dry_run"] is True
    assert settings["prometheus_port"] == 0
    assert settings["project_dir"] == str(ROOT)
    assert settings["state_dir"] == "/etc/tenfold/molmon/scale"  # tenfold_state_dir: scale lock and events
    assert settings["lb_status_url"] == "http://127.0.0.1:8081/status"
    assert settings["stub_status_url"] == "http://127.0.0.1:8081/nginx_status"
    pools = settings["pools"]
    assert (pools["frontend"]["min_replicas"], pools["frontend"]["max_replicas"]) == (2, 6)
    assert (pools["backend"]["min_replicas"], pools["backend"]["max_replicas"]) == (1, 8)
    assert pools["backend"]["target_utilization"] == 70.0


def test_scale_runs_use_the_project_playbook_and_the_given_inventory(host):
    settings = load_with_the_monitor(host, SETTINGS)["settings"]
    assert settings["scale_command"] == [
        f"{ROOT}/.venv/bin/ansible-playbook",
        "scale.yml",
        "-i",
        "inventories/local",
    ]


def test_unit_runs_the_monitor_on_the_rendered_settings(host):
    unit = host.file(UNIT)
    assert unit.is_file and unit.mode == 0o644 and unit.user == "root"
    lines = unit_lines(host)
    assert f"ExecStart={MONITOR} run --config {SETTINGS}" in lines
    assert not [line for line in lines if "PYTHONPATH" in line]  # the package is installed in the venv
    assert f"WorkingDirectory={ROOT}" in lines
    for line in ("Type=simple", "Restart=on-failure", "RestartSec=5", "TimeoutStopSec=120", "KillMode=mixed"):
        assert line in lines


def test_unit_is_hardened_but_may_write_the_scale_runs_paths(host):
    lines = unit_lines(host)
    for line in ("NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=full", "ProtectHome=read-only"):
        assert line in lines
    assert "ReadWritePaths=-/etc/tenfold/molmon" in lines
    assert f"ReadWritePaths=-{ROOT}/logs" in lines


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(host):
    run = host.run(f"systemd-analyze verify --man=no {UNIT}")
    assert run.rc == 0, run.stderr
    assert run.stdout.strip() == "" and run.stderr.strip() == ""


def test_unit_is_not_started_where_systemd_is_not_the_init(host):
    assert not host.file("/run/systemd/system").exists
    assert host.run(f"pgrep -f '[t]enfold-monitor run --config {SETTINGS}'").rc != 0


def run_bad_input(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            str(Path(__file__).parents[1] / "bad_input.yml"),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_zero_interval_fails_in_validate_before_anything_is_written(host):
    run = run_bad_input("-e", "monitor_interval=0")
    assert run.returncode != 0
    assert "the monitor rejects these settings: monitor_interval: interval_s must be positive" in run.stdout
    assert not host.file(BAD).exists


def test_min_above_max_fails_in_validate_before_anything_is_written(host):
    run = run_bad_input("-e", '{"monitor_pools": {"backend": {"min_replicas": 5, "max_replicas": 4}}}')
    assert run.returncode != 0
    assert (
        "monitor_pools.backend.min_replicas and monitor_pools.backend.max_replicas: need 0 <= min_replicas"
        " <= max_replicas and max_replicas >= 1, got 5 and 4"
    ) in run.stdout
    assert not host.file(BAD).exists


def test_bad_policy_values_are_named_by_the_variables_they_came_from(host):
    pools = '{"monitor_pools": {"backend": {"scale_down_utilization": 80}, "frontend": {}}}'
    run = run_bad_input("-e", pools, "-e", "monitor_tolerance=2")
    assert run.returncode != 0
    # a pool's own entry, and the variable every pool takes the other value from
    assert (
        "monitor_pools.backend.scale_down_utilization and monitor_target_utilization: need"
        " scale_down_utilization < target_utilization <= 100, got 80 and 70"
    ) in run.stdout
    # the shared variable once, though both pools take it
    failures = [line for line in run.stdout.splitlines() if "the monitor rejects these settings" in line]
    assert failures
    for line in failures:
        assert line.count("monitor_tolerance: tolerance must be below 1, got 2") == 1
    assert not host.file(BAD).exists


def test_a_cpu_trigger_above_100_is_the_policys_to_allow(host):
    # validate.yml's old Jinja copy of the checks capped it at 100, the policy never did: one rule now
    run = run_bad_input("-e", "monitor_cpu_trigger=150", "--check")
    assert run.returncode == 0, run.stdout
    assert not host.file(BAD).exists


def test_settings_the_monitor_rejects_never_replace_the_old_ones(host):
    before = host.file(SETTINGS).sha256sum
    run = run_bad_input(
        "-e",
        "monitor_stack=molmon",
        "-e",
        f"monitor_settings_path={SETTINGS}",
        "-e",
        f"monitor_unit_dir={Path(UNIT).parent}",
        "-e",
        "monitor_tolerance=1.5",
    )
    assert run.returncode != 0
    assert "the monitor rejects these settings" in run.stdout
    assert "tolerance must be below 1, got 1.5" in run.stdout
    assert host.file(SETTINGS).sha256sum == before


def test_logrotate_rotates_the_stacks_scale_events_by_size(host):
    config = "/etc/tenfold/molmon/logrotate.d/tenfold-scale-events-etc-tenfold-molmon-scale"
    text = host.file(config).content_string
    assert "/etc/tenfold/molmon/scale/scale-events.jsonl {" in text
    for directive in ("size 10M", "rotate 10", "missingok", "notifempty", "nocreate", "delaycompress"):
        assert f"\n    {directive}\n" in text
    assert "\n    copytruncate\n" not in text  # renamed: see the template
    check = host.run(f"logrotate -d {config}")
    assert check.rc == 0 and "error:" not in check.stderr, check.stderr
    assert "Handling 1 logs" in check.stderr + check.stdout


def test_unit_sends_the_monitors_stderr_to_the_journal(host):
    lines = unit_lines(host)
    assert "StandardError=journal" in lines and "StandardOutput=journal" in lines
    assert "SyslogIdentifier=tenfold-monitor-molmon" in lines


def test_logrotate_rotates_the_checkouts_text_logs_each_with_one_writer(host):
    config = f"/etc/tenfold/molmon/logrotate.d/tenfold-logs{re.sub('[^A-Za-z0-9]+', '-', str(ROOT))}"
    text = host.file(config).content_string
    logs = " ".join(
        f"{ROOT}/logs/{name}"
        for name in ("auto-scale.log", "monitor-scale-runs.log", "monitor-performance.log")
    )
    assert f"{logs} {{" in text
    for directive in ("size 10M", "rotate 5", "missingok", "nocreate", "delaycompress"):
        assert f"\n    {directive}\n" in text
    check = host.run(f"logrotate -d {config}")
    assert check.rc == 0 and "error:" not in check.stderr, check.stderr
