"""The backup role: one checksummed archive kept, a restore that brings lost files back byte for byte and
with their modes, a second restore that changes nothing, and a damaged archive refused before any write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BASE = Path("/etc/tenfold/molbak")
BACKUPS = BASE / "backups"
MANIFEST = "tenfold-backup/MANIFEST.json"
# Where each source of the archive lives on the host (molecule/backup/vars/main.yml).
SOURCES = {
    "lb-logs": BASE / "lb-logs",
    "logs": BASE / "logs",
    "scale-events": BASE / "logs" / "scale-events.jsonl",
    "inventory-1": BASE / "inventory",
}


def archive() -> Path:
    [only] = sorted(BACKUPS.glob("molbak-*.tar.gz"))
    return only


def manifest() -> dict:
    with tarfile.open(archive()) as tar:
        return json.load(tar.extractfile(MANIFEST))


def on_host(entry: dict) -> Path:
    base = SOURCES[entry["source"]]
    return base / entry["path"] if entry["path"] else base


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_retention_keeps_the_newest_archive_private_to_root(host):
    path = archive()  # two were written with backup_retention 1
    info = host.file(str(path))
    assert info.mode == 0o600 and info.user == "root"
    assert host.file(str(BACKUPS)).mode == 0o700


def test_the_manifest_has_every_file_with_its_checksum_and_leaves_out_locks_pids_and_absent_sources():
    found = manifest()
    assert found["stack"] == "molbak"
    assert set(found["scale"]) == {"frontend", "backend"}  # the pools' replica counts (none run: 0)
    files = {(e["source"], e["path"]) for e in found["files"] if e["type"] == "file"}
    assert ("lb-logs", "error.log") in files and ("inventory-1", "group_vars/all.yml") in files
    assert ("scale-events", "") in files and ("logs", "monitor-state.json") in files
    assert not [f for f in files if f[1].endswith((".lock", ".pid"))]
    assert ("logs", "scale-events.jsonl") not in files  # its own source, not twice
    assert "nginx" not in found["sources"] and "tls" not in found["sources"]  # not there: left out


def test_restore_brought_every_file_back_byte_for_byte_with_its_mode():
    for entry in manifest()["files"]:
        path = on_host(entry)
        assert (os.stat(path).st_mode & 0o7777) == entry["mode"], path
        if entry["type"] == "file":
            assert sha256(path) == entry["sha256"], path
    assert (
        BASE / "logs" / "monitor-decisions.jsonl"
    ).read_text() == '{"message": "molbak decision"}\n'  # lost
    assert (BASE / "logs" / "monitor-state.json").read_text() == '{"pid": 1}\n'  # had been changed
    assert (os.stat(BASE / "inventory" / "hosts.yml").st_mode & 0o777) == 0o600  # had been widened


def test_a_damaged_archive_is_refused_and_nothing_changes(host, tmp_path):
    damaged = tmp_path / "molbak-damaged.tar.gz"
    shutil.copyfile(archive(), damaged)
    with damaged.open("r+b") as handle:  # cut it short: the gzip stream ends early
        handle.truncate(damaged.stat().st_size // 2)
    (BASE / "logs" / "monitor-state.json").write_text('{"pid": 3}\n')
    try:
        before = {p: sha256(p) for p in BASE.rglob("*") if p.is_file()}
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        run = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "ansible-playbook"),
                str(Path(__file__).parents[1] / "bad_input.yml"),
                "-e",
                f"backup_src={damaged}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode != 0
        assert "backup not used, nothing changed" in run.stdout, run.stdout[-3000:]
        assert {p: sha256(p) for p in BASE.rglob("*") if p.is_file()} == before
    finally:  # back as converge left it, for a verify run again
        (BASE / "logs" / "monitor-state.json").write_text('{"pid": 1}\n')
