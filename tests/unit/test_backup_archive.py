"""Backup archives: a manifest of SHA-256 checksums, verification that rejects truncated, tampered and
foreign archives and unsafe members, an all-or-nothing restore with modes kept, and retention."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta

import pytest
from ansible_collections.tenfold.stack.plugins.module_utils import backup as tb

NOW = datetime(2026, 12, 1, 2, 0, 0, 123000, tzinfo=UTC)


@pytest.fixture
def tree(tmp_path):
    """A small stack: an nginx config directory, TLS material with a 0600 key, and an events file."""
    nginx = tmp_path / "etc" / "nginx"
    (nginx / "errors").mkdir(parents=True)
    (nginx / "nginx.conf").write_text("events {}\n")
    (nginx / "errors" / "502.html").write_text("<p>502</p>\n")
    tls = tmp_path / "etc" / "tls"
    tls.mkdir()
    (tls / "fullchain.pem").write_text("CERT\n")
    (tls / "privkey.pem").write_text("KEY\n")
    os.chmod(tls / "privkey.pem", 0o600)
    events = tmp_path / "logs" / "scale-events.jsonl"
    events.parent.mkdir()
    events.write_text('{"stack": "s1"}\n')
    (events.parent / "scale-s1.lock").write_text("123\n")
    sources = [
        tb.Source("nginx", str(nginx)),
        tb.Source("tls", str(tls)),
        tb.Source("logs", str(events.parent), exclude=("*.lock",)),
        tb.Source("state", str(tmp_path / "logs" / "monitor-state.json")),
    ]
    return tmp_path, sources


def make(tmp_path, sources, stack="s1", now=NOW, scale=None):
    dest = tmp_path / "backups"
    dest.mkdir(exist_ok=True)
    path = dest / tb.archive_name(stack, now)
    manifest, missing, _skipped = tb.write_archive(str(path), stack, sources, scale or {"frontend": 3}, now)
    return path, manifest, missing


def snapshot(root) -> dict:
    out = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(top, name)
            st = os.stat(full)
            with open(full, "rb") as handle:
                out[os.path.relpath(full, root)] = (handle.read(), st.st_mode & 0o7777)
    return out


def rewrite(src, dest, change):
    """Copy a tar.gz member by member, letting change(info, data) return new (info, data) or None to drop."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dest, "w:gz") as tout:
        for info in tin:
            data = tin.extractfile(info).read() if info.isreg() else None
            result = change(info, data)
            if result is None:
                continue
            info, data = result
            if data is not None:
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data) if data is not None else None)


def test_archive_records_every_file_with_its_checksum_mode_and_the_scale_state(tree):
    tmp_path, sources = tree
    path, manifest, missing = make(tmp_path, sources, scale={"frontend": 4, "backend": 3})
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert missing == [str(tmp_path / "logs" / "monitor-state.json")]
    files = {(e.source, e.path): e for e in manifest.entries if e.type == "file"}
    assert set(files) == {
        ("nginx", "nginx.conf"),
        ("nginx", "errors/502.html"),
        ("tls", "fullchain.pem"),
        ("tls", "privkey.pem"),
        ("logs", "scale-events.jsonl"),
    }
    assert files[("tls", "privkey.pem")].mode == 0o600
    verified = tb.verify(str(path), "s1")
    assert verified.scale == {"frontend": 4, "backend": 3}
    assert verified.summary()["files"] == 5


def test_restore_brings_back_byte_identical_files_with_their_modes(tree):
    tmp_path, sources = tree
    before = snapshot(tmp_path / "etc")
    path, _, _ = make(tmp_path, sources)
    (tmp_path / "etc" / "nginx" / "nginx.conf").write_text("broken\n")
    (tmp_path / "etc" / "tls" / "privkey.pem").unlink()
    os.chmod(tmp_path / "etc" / "tls" / "fullchain.pem", 0o666)
    manifest = tb.verify(str(path), "s1")
    targets = {s.name: s.path for s in sources}
    changed = tb.restore(str(path), manifest, targets)
    assert sorted(os.path.basename(p) for p in changed) == ["fullchain.pem", "nginx.conf", "privkey.pem"]
    assert snapshot(tmp_path / "etc") == before
    assert tb.restore(str(path), manifest, targets) == []  # a second restore changes nothing


def test_restore_that_fails_halfway_puts_every_file_back(tree, monkeypatch):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    for name in ("nginx/nginx.conf", "nginx/errors/502.html", "tls/fullchain.pem"):
        (tmp_path / "etc" / name).write_text("changed\n")
    before = snapshot(tmp_path / "etc")
    manifest = tb.verify(str(path), "s1")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(tb.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        tb.restore(str(path), manifest, {s.name: s.path for s in sources})
    monkeypatch.setattr(tb.os, "replace", real_replace)
    assert snapshot(tmp_path / "etc") == before
    leftovers = [p.name for p in (tmp_path / "etc").rglob(".*")]
    assert leftovers == []


def test_restore_leaves_sources_it_is_not_given_alone(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    conf = tmp_path / "etc" / "nginx" / "nginx.conf"
    conf.write_text("changed\n")
    tb.restore(str(path), tb.verify(str(path), "s1"), {"tls": sources[1].path})
    assert conf.read_text() == "changed\n"


def test_truncated_archive_is_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        bad = tmp_path / f"cut-{cut}.tar.gz"
        bad.write_bytes(data[:cut])
        with pytest.raises(tb.BackupError, match=r"truncated|not a gzip|no tenfold-backup/MANIFEST"):
            tb.verify(str(bad), "s1")


def test_tampered_member_is_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    bad = tmp_path / "tampered.tar.gz"
    rewrite(
        path,
        bad,
        lambda i, d: (i, b"events { worker_connections 1; }\n" if i.name.endswith("nginx.conf") else d),
    )
    with pytest.raises(tb.BackupError, match="does not match its SHA-256"):
        tb.verify(str(bad), "s1")


def test_member_added_or_dropped_is_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    dropped = tmp_path / "dropped.tar.gz"
    rewrite(path, dropped, lambda i, d: None if i.name.endswith("502.html") else (i, d))
    with pytest.raises(tb.BackupError, match="does not match its manifest"):
        tb.verify(str(dropped), "s1")


def test_other_stacks_backup_is_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources, stack="other")
    with pytest.raises(tb.BackupError, match="backup of stack 'other', not of stack 's1'"):
        tb.verify(str(path), "s1")


def test_random_tar_gz_is_rejected(tmp_path):
    src = tmp_path / "hello.txt"
    src.write_text("hello\n")
    bad = tmp_path / "random.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(src, arcname="hello.txt")
    with pytest.raises(tb.BackupError, match="not a tenfold backup"):
        tb.verify(str(bad), "s1")
    plain = tmp_path / "plain.tar.gz"
    plain.write_bytes(gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(tb.BackupError):
        tb.verify(str(plain), "s1")


def test_manifest_of_another_format_or_version_is_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    for key, value, message in (
        ("format", "other", "not a tenfold-backup manifest"),
        ("version", 99, "version"),
    ):

        def change(info, data, key=key, value=value):
            if info.name == tb.MANIFEST:
                raw = json.loads(data)
                raw[key] = value
                data = json.dumps(raw).encode()
            return info, data

        bad = tmp_path / f"{key}.tar.gz"
        rewrite(path, bad, change)
        with pytest.raises(tb.BackupError, match=message):
            tb.verify(str(bad), "s1")


@pytest.mark.parametrize(
    "name",
    ["../evil", "/etc/passwd", "tenfold-backup/files/nginx/../../../evil", "tenfold-backup/files/./x"],
)
def test_path_traversal_members_are_rejected(tree, name):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as tar, tarfile.open(path, "r:gz") as tin:
        evil = tarfile.TarInfo(name)
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        for info in tin:
            tar.addfile(info, tin.extractfile(info) if info.isreg() else None)
    with pytest.raises(tb.BackupError, match=r"unsafe path|outside") as refused:
        tb.verify(str(bad), "s1")
    assert str(refused.value).startswith(f"{bad}: ")
    assert not (tmp_path / "evil").exists()


def test_link_members_are_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    bad = tmp_path / "link.tar.gz"
    with tarfile.open(bad, "w:gz") as tar, tarfile.open(path, "r:gz") as tin:
        link = tarfile.TarInfo("tenfold-backup/files/nginx/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
        for info in tin:
            tar.addfile(info, tin.extractfile(info) if info.isreg() else None)
    with pytest.raises(tb.BackupError, match="link or a special file"):
        tb.verify(str(bad), "s1")


def test_manifest_entry_with_a_traversal_path_is_rejected(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)

    def change(info, data):
        if info.name == tb.MANIFEST:
            raw = json.loads(data)
            raw["files"][-1]["path"] = "../../outside"
            data = json.dumps(raw).encode()
        return info, data

    bad = tmp_path / "manifest-traversal.tar.gz"
    rewrite(path, bad, change)
    with pytest.raises(tb.BackupError, match="unsafe path"):
        tb.verify(str(bad), "s1")


def test_restore_refuses_to_write_through_a_link_outside_its_target(tree):
    tmp_path, sources = tree
    path, _, _ = make(tmp_path, sources)
    manifest = tb.verify(str(path), "s1")
    errors = tmp_path / "etc" / "nginx" / "errors"
    for child in errors.iterdir():
        child.unlink()
    errors.rmdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    errors.symlink_to(outside)
    with pytest.raises(tb.BackupError, match="outside"):
        tb.restore(str(path), manifest, {"nginx": sources[0].path})
    assert list(outside.iterdir()) == []


def test_retention_keeps_exactly_the_newest_n_of_this_stack(tree):
    tmp_path, sources = tree
    made = [make(tmp_path, sources, now=NOW + timedelta(minutes=i))[0] for i in range(5)]
    other = make(tmp_path, sources, stack="s1-b", now=NOW)[0]
    unrelated = tmp_path / "backups" / "notes.txt"
    unrelated.write_text("keep me\n")
    backups_dir = str(tmp_path / "backups")
    assert tb.backups(backups_dir, "s1") == [str(p) for p in reversed(made)]
    assert tb.expired(backups_dir, "s1", 2) == [str(p) for p in reversed(made[:3])]
    assert tb.backups(backups_dir, "s1-b") == [str(other)]
    with pytest.raises(tb.BackupError, match="at least 1"):
        tb.expired(backups_dir, "s1", 0)


def test_latest_is_this_stacks_newest_backup(tree):
    tmp_path, sources = tree
    older = make(tmp_path, sources, now=NOW)[0]
    newer = make(tmp_path, sources, now=NOW + timedelta(seconds=1))[0]
    make(tmp_path, sources, stack="zzz", now=NOW + timedelta(days=1))
    backups_dir = str(tmp_path / "backups")
    assert tb.resolve("latest", backups_dir, "s1") == str(newer)
    assert tb.resolve(older.name, backups_dir, "s1") == str(older)
    with pytest.raises(tb.BackupError, match="no backup of stack nope"):
        tb.resolve("latest", backups_dir, "nope")
    with pytest.raises(tb.BackupError, match="does not exist"):
        tb.resolve(str(tmp_path / "missing.tar.gz"), backups_dir, "s1")


def test_bad_source_names_and_relative_paths_are_refused(tmp_path):
    with pytest.raises(tb.BackupError, match="source name"):
        tb.collect([tb.Source("../x", str(tmp_path))])
    with pytest.raises(tb.BackupError, match="absolute"):
        tb.collect([tb.Source("x", "relative/dir")])
    with pytest.raises(tb.BackupError, match="unique"):
        tb.collect([tb.Source("x", str(tmp_path)), tb.Source("x", str(tmp_path))])
