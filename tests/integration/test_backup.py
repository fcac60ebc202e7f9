"""backup.yml and restore.yml on the real stack: a restore gives back byte-identical files (modes kept) and
the recorded replica counts; truncated, tampered and foreign archives, and a config nginx rejects, are
refused with nothing changed; retention keeps exactly N. Every backup goes to a temporary directory, and
the session stack is left as it was found."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tenfold_backup as tb
from conftest import stack_containers
from helpers import EVENTS_LOG, ROOT, playbook

pytestmark = pytest.mark.integration


class Backups:
    """Runs backup.yml and restore.yml with a backup directory, a project logs directory and an inventory
    of the test's own (the inventory is a copy of the local one, so restoring it never writes the repo)."""

    def __init__(self, stack, root: Path) -> None:
        self.stack = stack
        self.dir = root / "backups"
        self.logs = root / "logs"
        self.logs.mkdir()
        (self.logs / "monitor-state.json").write_text('{"pools": {}}\n')
        self.inventory = root / "inventory"
        shutil.copytree(ROOT / "inventories" / "local", self.inventory)
        self.nginx = Path(f"/etc/tenfold/{stack.name}/nginx")
        self.tls = Path(f"/etc/tenfold/{stack.name}/tls")

    def args(self, *extra: str) -> list[str]:
        base = ["-i", str(self.inventory), "-e", f"backup_dir={self.dir}"]
        base += ["-e", f"backup_project_logs_dir={self.logs}"]
        return base + [arg for pair in extra for arg in ("-e", pair)]

    def backup(self, *extra: str):
        return playbook("backup.yml", *self.args(*extra))

    def restore(self, archive: str | Path, *extra: str):
        return playbook("restore.yml", *self.args(f"backup={archive}", *extra))

    def archives(self) -> list[Path]:
        return [Path(p) for p in tb.backups(str(self.dir), self.stack.name)]

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Contents and modes of everything a restore writes (the LB logs grow with every request, so not
        those)."""
        out = {}
        roots = [self.nginx, self.tls, self.inventory, self.logs]
        if EVENTS_LOG.exists():
            roots.append(EVENTS_LOG)
        for root in roots:
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in paths:
                out[str(path)] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        return out


def replicas(engine, stack, pool: str) -> int:
    return sum(1 for c in stack_containers(engine, stack.name) if c.labels.get("tenfold.pool") == pool)


def lb_container(engine, stack):
    return engine.containers.get(f"{stack.name}-lb")


def copy_archive(src: Path, dest: Path, change) -> Path:
    """A copy of an archive, member by member; change(info, data) returns the (info, data) to write."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dest, "w:gz") as tout:
        for info in tin:
            data = tin.extractfile(info).read() if info.isreg() else None
            info, data = change(info, data)
            if data is not None:
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


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
    assert stack.client().get("/api/whoami").status == 200


def truncated(archive: Path, dest: Path) -> Path:
    data = archive.read_bytes()
    dest.write_bytes(data[: len(data) * 2 // 3])
    return dest


def tampered(archive: Path, dest: Path) -> Path:
    def change(info, data):
        if info.name.endswith("/nginx/nginx.conf"):
            data = data.replace(b"worker_connections", b"worker_connections 1; #")
        return info, data

    return copy_archive(archive, dest, change)


def other_stacks(archive: Path, dest: Path) -> Path:
    source = dest.parent / "other-nginx"
    source.mkdir()
    (source / "nginx.conf").write_text("events {}\n")
    sources = [tb.Source("nginx", str(source))]
    tb.write_archive(str(dest), "someotherstack", sources, {"backend": 9}, datetime.now(UTC))
    return dest


def random_tar_gz(archive: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(ROOT / "README.md", arcname="nginx/nginx.conf")
    return dest


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (truncated, "truncated"),
        (tampered, "does not match its SHA-256"),
        (other_stacks, "is a backup of stack 'someotherstack'"),
        (random_tar_gz, "not a tenfold backup"),
    ],
)
def test_bad_archive_is_rejected_and_nothing_changes(engine, stack, backups, tmp_path, make, message):
    assert backups.backup().rc == 0
    [archive] = backups.archives()
    with open(backups.nginx / "nginx.conf", "a") as handle:
        handle.write("# changed after the backup\n")
    before = backups.snapshot()
    started = lb_container(engine, stack).attrs["State"]["StartedAt"]
    bad = make(archive, tmp_path / "bad.tar.gz")
    run = backups.restore(bad)
    assert run.rc != 0
    assert message in run.output and "nothing changed" in run.output
    assert backups.snapshot() == before
    assert lb_container(engine, stack).attrs["State"]["StartedAt"] == started


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
    run = backups.restore("")
    assert run.rc != 0 and "say which backup to use" in run.output
