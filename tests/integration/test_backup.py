"""backup.yml and restore.yml on the real stack: a restore gives back byte-identical files (modes kept) and
the recorded replica counts; a config nginx rejects is refused with nothing changed (the malformed archives
are rows of test_bad_input.py); retention keeps exactly N. Every backup goes to a temporary directory, and
the session stack is left as it was found."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import backup as tb
from conftest import pool_containers
from helpers import EVENTS_LOG, Backups, playbook

pytestmark = pytest.mark.integration


def replicas(engine, stack, pool: str) -> int:
    return len(pool_containers(engine, stack, pool))


@pytest.fixture
def backups(stack, tmp_path):
    kit = Backups(stack, tmp_path)
    conf = kit.nginx / "nginx.conf"
    original = conf.read_bytes()
    yield kit
    # Whatever a test did, the live config is the one the stack had.
    if conf.read_bytes() != original:
        conf.write_bytes(original)


def test_restore_gives_back_byte_identical_files_and_the_recorded_replicas(engine, stack, backups):
    assert backups.backup().rc == 0
    before = backups.snapshot()
    scale_before = {pool: replicas(engine, stack, pool) for pool in ("frontend", "backend")}
    [archive] = backups.archives()
    assert tb.verify(str(archive), stack.name).scale == scale_before

    # Change what the backup holds: the LB config, the key's mode, an error page, the inventory, the state.
    with open(backups.nginx / "nginx.conf", "a") as handle:
        handle.write("# changed after the backup\n")
    (backups.nginx / "errors" / "502.html").unlink()
    os.chmod(backups.tls / "privkey.pem", 0o644)
    (backups.inventory / "group_vars" / "all.yml").write_text("tenfold_stack: changed\n")
    (backups.logs / "monitor-state.json").write_text('{"pools": {"backend": {}}}\n')
    # ... and the scale state: one backend replica more.
    grown = playbook("scale.yml", "-e", "pool=backend", "-e", "direction=up")
    assert grown.rc == 0, grown.output[-3000:]
    assert replicas(engine, stack, "backend") == scale_before["backend"] + 1

    run = backups.restore("latest")
    assert run.rc == 0, run.output[-4000:]
    after = backups.snapshot()
    events = before.pop(str(EVENTS_LOG), None)
    restored_events = after.pop(str(EVENTS_LOG), None)
    assert after == before
    if events is not None:
        # The restored events, then the restore's own scale run.
        assert restored_events[0].startswith(events[0])
    assert stat.S_IMODE((backups.tls / "privkey.pem").stat().st_mode) == 0o600
    assert {pool: replicas(engine, stack, pool) for pool in scale_before} == scale_before
    # The archive records each pool's serving replicas; the warm ones follow from the inventory.
    for pool, count in scale_before.items():
        warm = [c.name for c in pool_containers(engine, stack, pool, warm=True)]
        assert warm == [f"{stack.name}-{pool}-{count + 1}-warm"]
    assert stack.client().get("/api/whoami").status == 200


def test_restored_lb_logs_are_reopened_so_nginx_writes_to_them(stack, backups):
    assert backups.backup().rc == 0
    log = Path(f"/var/log/tenfold/{stack.name}/access.json.log")
    size = log.stat().st_size
    for _ in range(3):  # the live log grows past the archive's, so the restore replaces it
        stack.client().get("/api/whoami")
    deadline = time.monotonic() + 10
    while log.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.2)
    run = backups.restore("latest", json.dumps({"backup_restore_only": ["lb-logs"]}))
    assert run.rc == 0, run.output[-4000:]
    marker = uuid.uuid4().hex
    assert stack.client().get(f"/api/whoami?after-restore={marker}").status == 200
    deadline = time.monotonic() + 10  # the access log is flushed every second
    while marker not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker in log.read_text(), "nginx still writes to the log file the restore replaced"


def test_config_nginx_rejects_is_not_restored(engine, stack, backups):
    conf = backups.nginx / "nginx.conf"
    good = conf.read_bytes()
    # A well-formed archive whose nginx config is broken.
    conf.write_bytes(good + b"not_a_directive on;\n")
    assert backups.backup().rc == 0
    conf.write_bytes(good)
    before = backups.snapshot()
    run = backups.restore("latest")
    assert run.rc != 0
    assert 'unknown directive "not_a_directive"' in run.output
    assert backups.snapshot() == before
    assert stack.client().get("/api/whoami").status == 200


def test_restore_that_cannot_write_a_file_puts_everything_back(stack, backups):
    assert backups.backup().rc == 0
    with open(backups.nginx / "nginx.conf", "a") as handle:
        handle.write("# changed after the backup\n")
    page = backups.nginx / "errors" / "404.html"
    original = page.read_bytes()
    page.write_text("<p>changed</p>\n")
    # An immutable file: the restore cannot replace it, after it has replaced nginx.conf.
    if subprocess.run(["chattr", "+i", str(page)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        before = backups.snapshot()
        run = backups.restore("latest")
        assert run.rc != 0
        assert "Operation not permitted" in run.output
        assert "the previous files were put back" in run.output
        assert backups.snapshot() == before
        assert stack.client().get("/api/whoami").status == 200
    finally:
        subprocess.run(["chattr", "-i", str(page)], check=False)
        page.write_bytes(original)


def test_retention_keeps_exactly_the_newest_n(stack, backups):
    backups.dir.mkdir()
    unrelated = backups.dir / "someotherstack-20260101T000000.000Z.tar.gz"
    unrelated.write_bytes(b"not ours")
    made = []
    for _ in range(3):
        run = backups.backup("backup_retention=2")
        assert run.rc == 0, run.output[-3000:]
        made.append(backups.archives()[0])
    assert backups.archives() == [made[2], made[1]]
    assert unrelated.exists()


def test_bad_backup_settings_fail_before_anything_is_written(stack, backups):
    run = backups.backup("backup_retention=0")
    assert run.rc != 0 and "backup_retention=0 at least 1" in run.output
    assert not backups.dir.exists()
