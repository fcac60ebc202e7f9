# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Pure logic of tenfold's backups: the archive, its manifest of SHA-256 checksums, verification,
restoring files, and retention.

An archive is a gzip-compressed tar file named ``<stack>-<UTC time>.tar.gz``. Every member lies under
``tenfold-backup/``: the files under ``tenfold-backup/files/<source>/...`` and, last, the manifest
``tenfold-backup/MANIFEST.json``. The manifest names the format and its version, the stack, the time, the
replica count of each pool (the scale state), each source's host path, and for every file its path, size,
SHA-256, mode, owner and group. An archive is accepted only if it reads to the end (a truncated one does
not), every member is a plain file or directory with a safe name, the members are exactly the manifest's
files with the manifest's checksums (a tampered one is not), and the manifest is this format and this
stack's (a foreign one is not).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

FORMAT = "tenfold-backup"
VERSION = 1
PREFIX = "tenfold-backup"
FILES_PREFIX = PREFIX + "/files"
MANIFEST = PREFIX + "/MANIFEST.json"
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
CHUNK = 1 << 16
# The manifest is small; a bigger one is not ours.
MANIFEST_MAX = 64 << 20


class BackupError(Exception):
    """An archive that cannot be made, verified or restored; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """Something to back up: a directory (with everything under it) or a single file."""

    name: str
    path: str
    exclude: tuple[str, ...] = ()

    def excluded(self, rel: str) -> bool:
        base = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(base, p) for p in self.exclude)


@dataclass
class Entry:
    """One file or directory of an archive, as its manifest records it ("" is a source's own path)."""

    source: str
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    mtime: int = 0

    @property
    def member(self) -> str:
        return f"{FILES_PREFIX}/{self.source}" + (f"/{self.path}" if self.path else "")


@dataclass
class Manifest:
    stack: str
    created: str
    scale: dict[str, int]
    sources: dict[str, dict]
    entries: list[Entry] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "stack": self.stack,
            "created": self.created,
            "scale": self.scale,
            "sources": self.sources,
            "files": [asdict(e) for e in self.entries],
        }

    def summary(self) -> dict:
        """The manifest without its file list (what a module returns)."""
        files = [e for e in self.entries if e.type == "file"]
        return {**self.as_dict(), "files": len(files), "bytes": sum(e.size for e in files)}


# --- names --------------------------------------------------------------------------------------------
def check_stack(stack: str) -> str:
    if not STACK_NAME.match(stack or ""):
        raise BackupError(f"stack={stack!r} is not a stack name (letters, digits, '_', '.', '-')")
    return stack


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"


def archive_name(stack: str, now: datetime) -> str:
    return f"{check_stack(stack)}-{timestamp(now)}.tar.gz"


def _archive_re(stack: str) -> re.Pattern:
    return re.compile("^" + re.escape(stack) + r"-(\d{8}T\d{6}\.\d{3}Z)\.tar\.gz$")


def backups(directory: str, stack: str) -> list[str]:
    """This stack's archives in directory, newest first (other stacks' and other files are left alone)."""
    pattern = _archive_re(check_stack(stack))
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(m.group(1), n) for n in names if (m := pattern.match(n))]
    return [os.path.join(directory, n) for _when, n in sorted(found, reverse=True)]


def expired(directory: str, stack: str, keep: int) -> list[str]:
    """The archives retention removes: all but the newest `keep` of this stack's."""
    if keep < 1:
        raise BackupError(f"retention={keep} must keep at least 1 backup")
    return backups(directory, stack)[keep:]


def resolve(src: str, directory: str | None, stack: str) -> str:
    """An archive path from src: "latest" (this stack's newest in directory), a path, or a bare name."""
    src = (src or "").strip()
    if not src:
        raise BackupError("say which backup to use: -e backup=latest or -e backup=<archive file>")
    if src == "latest":
        if not directory:
            raise BackupError("backup=latest needs the backup directory")
        found = backups(directory, stack)
        if not found:
            raise BackupError(f"there is no backup of stack {stack} in {directory}")
        return found[0]
    if not os.path.isabs(src) and directory and os.sep not in src:
        src = os.path.join(directory, src)
    if not os.path.isfile(src):
        raise BackupError(f"backup {src} does not exist or is not a file")
    return src


def safe_relpath(path: str) -> str:
    """A member path that cannot leave the directory it is extracted to, or a BackupError."""
    if path == "":
        return path
    if "\\" in path or "\x00" in path or path.startswith("/"):
        raise BackupError(f"unsafe path {path!r} in the archive")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BackupError(f"unsafe path {path!r} in the archive")
    return path


# --- collecting ---------------------------------------------------------------------------------------
def _entry(source: str, rel: str, st: os.stat_result) -> Entry:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return Entry(
        source=source,
        path=rel,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind == "file" else 0,
        mtime=int(st.st_mtime),
    )


def collect(sources: list[Source]) -> tuple[list[tuple[Entry, str]], list[str], list[str]]:
    """(entries with their host paths, sources that do not exist, paths skipped: links and specials)."""
    found: list[tuple[Entry, str]] = []
    missing: list[str] = []
    skipped: list[str] = []
    names = [s.name for s in sources]
    for name in names:
        if not SOURCE_NAME.match(name):
            raise BackupError(f"source name {name!r} must be lower-case letters, digits, '_', '.' or '-'")
    if len(set(names)) != len(names):
        raise BackupError(f"source names must be unique, got {names}")
    for source in sources:
        if not os.path.isabs(source.path):
            raise BackupError(f"source {source.name}: path {source.path!r} must be absolute")
        try:
            st = os.lstat(source.path)
        except FileNotFoundError:
            missing.append(source.path)
            continue
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            skipped.append(source.path)
            continue
        found.append((_entry(source.name, "", st), source.path))
        if stat.S_ISDIR(st.st_mode):
            found.extend(_walk(source, skipped))
    return found, missing, skipped


def _walk(source: Source, skipped: list[str]) -> Iterator[tuple[Entry, str]]:
    for top, dirs, files in os.walk(source.path):
        dirs.sort()
        rel_top = os.path.relpath(top, source.path)
        rel_top = "" if rel_top == "." else rel_top
        for name in [*dirs, *sorted(files)]:
            rel = f"{rel_top}/{name}" if rel_top else name
            full = os.path.join(top, name)
            if source.excluded(rel):
                if name in dirs:
                    dirs.remove(name)
                continue
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                yield _entry(source.name, rel, st), full
            else:
                skipped.append(full)


# --- writing ------------------------------------------------------------------------------------------
class _Hashing(io.RawIOBase):
    """Reads at most `size` bytes of a file, hashing them (a log that grows meanwhile is cut at `size`)."""

    def __init__(self, handle: io.BufferedReader, size: int) -> None:
        self._handle = handle
        self._left = size
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._handle.read(n)
        self._left -= len(data)
        self.digest.update(data)
        return data


def _tarinfo(name: str, entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if entry.type == "dir" else tarfile.REGTYPE
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.size = entry.size
    info.mtime = entry.mtime
    return info


def write_archive(
    path: str, stack: str, sources: list[Source], scale: dict[str, int], now: datetime
) -> tuple[Manifest, list[str], list[str]]:
    """Write the archive to path (0600, through a temporary file renamed into place). Returns
    (manifest, missing sources, skipped paths)."""
    check_stack(stack)
    found, missing, skipped = collect(sources)
    manifest = Manifest(
        stack=stack,
        created=now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        scale={str(k): int(v) for k, v in scale.items()},
        sources={},
    )
    for entry, host_path in found:
        if entry.path == "":
            manifest.sources[entry.source] = {"path": host_path, "type": entry.type}
    partial = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar,
        ):
            for entry, host_path in found:
                if entry.type == "dir":
                    tar.addfile(_tarinfo(entry.member, entry))
                elif not _add_file(tar, entry, host_path, skipped):
                    continue
                manifest.entries.append(entry)
            data = json.dumps(manifest.as_dict(), indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o600, int(now.timestamp())
            tar.addfile(info, io.BytesIO(data))
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return manifest, missing, skipped


def _add_file(tar: tarfile.TarFile, entry: Entry, host_path: str, skipped: list[str]) -> bool:
    try:
        handle = open(host_path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        skipped.append(host_path)  # removed since it was listed (a rotated log)
        return False
    with handle:
        size = os.fstat(handle.fileno()).st_size
        entry.size = size
        reader = _Hashing(handle, size)
        tar.addfile(_tarinfo(entry.member, entry), reader)
        entry.sha256 = reader.digest.hexdigest()
    return True


# --- verifying ----------------------------------------------------------------------------------------
def _open(path: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BackupError(f"{path} is not a gzip-compressed tar archive, or it is truncated: {exc}") from exc


def _members(path: str) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Every member, to the end of the archive: a truncated or corrupt one raises BackupError."""
    tar = _open(path)
    try:
        while True:
            try:
                info = tar.next()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise BackupError(f"{path} is truncated or corrupt: {exc}") from exc
            if info is None:
                _drain(tar, path)
                return
            yield info, tar
    finally:
        tar.close()


def _drain(tar: tarfile.TarFile, path: str) -> None:
    """Read the compressed stream to its end, so that gzip checks its length and CRC (a file cut in its
    last bytes still lists every member)."""
    try:
        while tar.fileobj.read(CHUNK):
            pass
    except (OSError, EOFError, zlib.error) as exc:
        raise BackupError(f"{path} is truncated or corrupt: {exc}") from exc


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, path: str, sink=None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        handle = tar.extractfile(info)
        while handle is not None and (chunk := handle.read(CHUNK)):
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink(chunk)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BackupError(f"{path} is truncated or corrupt (in {info.name}): {exc}") from exc
    return digest.hexdigest(), size


def _check_member(info: tarfile.TarInfo, path: str) -> None:
    name = info.name
    if not (info.isreg() or info.isdir()):
        raise BackupError(f"{path}: member {name!r} is a link or a special file; a tenfold backup has none")
    if name == MANIFEST:
        return
    if not (name == FILES_PREFIX or name.startswith(FILES_PREFIX + "/")):
        raise BackupError(
            f"{path}: member {name!r} lies outside {FILES_PREFIX}/: this is not a tenfold backup"
        )
    try:
        safe_relpath(name)
    except BackupError as exc:
        raise BackupError(f"{path}: {exc}") from None


def parse_manifest(data: bytes, path: str, stack: str) -> Manifest:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BackupError(f"{path}: the manifest is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BackupError(f"{path}: the manifest is not a {FORMAT} manifest: this is not a tenfold backup")
    if raw.get("version") != VERSION:
        raise BackupError(
            f"{path}: manifest version {raw.get('version')!r} is not {VERSION}, the one this tenfold reads"
        )
    if raw.get("stack") != stack:
        raise BackupError(
            f"{path} is a backup of stack {raw.get('stack')!r}, not of stack {stack!r}: "
            "it is not restored here"
        )
    try:
        entries = [Entry(**e) for e in raw["files"]]
        sources = {str(k): dict(v) for k, v in raw["sources"].items()}
        scale = {str(k): int(v) for k, v in raw["scale"].items()}
        created = str(raw["created"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BackupError(f"{path}: the manifest is incomplete or malformed: {exc}") from exc
    for entry in entries:
        if not SOURCE_NAME.match(entry.source) or entry.source not in sources:
            raise BackupError(f"{path}: the manifest names an unknown source {entry.source!r}")
        safe_relpath(entry.path)
        if entry.type not in ("file", "dir") or (entry.type == "file" and not entry.sha256):
            raise BackupError(f"{path}: manifest entry {entry.member!r} is malformed")
    return Manifest(stack=stack, created=created, scale=scale, sources=sources, entries=entries)


def verify(path: str, stack: str) -> Manifest:
    """Read the whole archive and check it against its manifest; the manifest, or a BackupError."""
    check_stack(stack)
    seen: dict[str, tuple[str, str | None, int]] = {}
    manifest_data: bytes | None = None
    for info, tar in _members(path):
        _check_member(info, path)
        if info.name in seen or (info.name == MANIFEST and manifest_data is not None):
            raise BackupError(f"{path}: member {info.name!r} appears twice")
        if info.name == MANIFEST:
            if not info.isreg() or info.size > MANIFEST_MAX:
                raise BackupError(f"{path}: {MANIFEST} is not a manifest")
            chunks: list[bytes] = []
            _read_member(tar, info, path, chunks.append)
            manifest_data = b"".join(chunks)
        elif info.isdir():
            seen[info.name] = ("dir", None, 0)
        else:
            digest, size = _read_member(tar, info, path)
            seen[info.name] = ("file", digest, size)
    if manifest_data is None:
        raise BackupError(f"{path} has no {MANIFEST}: it is not a tenfold backup (or it is truncated)")
    manifest = parse_manifest(manifest_data, path, stack)
    wanted = {e.member: e for e in manifest.entries}
    extra = sorted(set(seen) - set(wanted))
    absent = sorted(set(wanted) - set(seen))
    if extra or absent:
        raise BackupError(
            f"{path} does not match its manifest: members not in the manifest {extra[:5]}, "
            f"manifest files missing from the archive {absent[:5]}"
        )
    for member, entry in wanted.items():
        kind, digest, size = seen[member]
        if kind != entry.type or (kind == "file" and (digest != entry.sha256 or size != entry.size)):
            raise BackupError(
                f"{path}: {member} does not match its SHA-256 in the manifest: "
                "the archive was changed after it was made"
            )
    return manifest


# --- restoring ----------------------------------------------------------------------------------------
def _target(root: str, rel: str) -> str:
    target = os.path.join(root, rel) if rel else root
    base = os.path.realpath(root)
    real_parent = os.path.realpath(os.path.dirname(target)) if rel else os.path.dirname(base)
    if rel and not (real_parent == base or real_parent.startswith(base + os.sep)):
        raise BackupError(f"{target} would be written outside {root} (a link on the way?)")
    return target


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
            return digest.hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _same(target: str, entry: Entry, owners: bool) -> bool:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if stat.S_IMODE(st.st_mode) != entry.mode or (
        owners and (st.st_uid, st.st_gid) != (entry.uid, entry.gid)
    ):
        return False
    if entry.type == "dir":
        return stat.S_ISDIR(st.st_mode)
    return stat.S_ISREG(st.st_mode) and _file_sha256(target) == entry.sha256


def plan_restore(manifest: Manifest, targets: dict[str, str], owners: bool = True) -> list[tuple[Entry, str]]:
    """The entries whose files differ from the archive, each with the host path it is restored to.
    `targets` maps source names to the paths they are restored to (sources not named are left alone)."""
    todo = []
    for entry in manifest.entries:
        root = targets.get(entry.source)
        if root is None:
            continue
        recorded = manifest.sources[entry.source].get("type")
        if entry.path == "" and recorded == "file" and os.path.isdir(root):
            raise BackupError(f"source {entry.source} is a file in the backup but {root} is a directory")
        target = _target(root, entry.path)
        if not _same(target, entry, owners):
            todo.append((entry, target))
    return todo


def restore(path: str, manifest: Manifest, targets: dict[str, str], owners: bool = True) -> list[str]:
    """Write the files that differ from the (verified) archive, all or none: each goes to a temporary file
    next to its target, checked against the manifest again, and only when every one is written are they
    renamed into place. Returns the paths changed."""
    todo = plan_restore(manifest, targets, owners)
    if not todo:
        return []
    by_member = {e.member: (e, t) for e, t in todo}
    for entry, target in todo:
        if entry.type == "dir":
            os.makedirs(target, exist_ok=True)
    written: list[tuple[str, str, Entry]] = []
    try:
        for info, tar in _members(path):
            item = by_member.get(info.name)
            if item is None or item[0].type != "file":
                continue
            entry, target = item
            os.makedirs(os.path.dirname(target), exist_ok=True)
            temp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tenfold-restore")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            written.append((temp, target, entry))
            with os.fdopen(fd, "wb") as out:
                digest, _size = _read_member(tar, info, path, out.write)
            if digest != entry.sha256:
                raise BackupError(f"{path}: {info.name} changed while it was restored; nothing was restored")
        if len(written) != sum(1 for e, _target in todo if e.type == "file"):
            raise BackupError(f"{path}: files of the manifest went missing while it was restored")
        for temp, _target, entry in written:
            _set_meta(temp, entry, owners)
        _swap_in(written)
        written = []
    finally:
        for temp, _target, _entry in written:
            if os.path.exists(temp):
                os.unlink(temp)
    for entry, target in todo:
        if entry.type == "dir":
            _set_meta(target, entry, owners)
    return [t for _entry, t in todo]


def _swap_in(written: list[tuple[str, str, Entry]]) -> None:
    """Rename every temporary file onto its target; if one rename fails, the targets already replaced get
    their previous files back (kept as hard links until every rename succeeded)."""
    done: list[tuple[str, str | None]] = []
    try:
        for temp, target, _entry in written:
            saved = None
            if os.path.lexists(target):
                saved = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tenfold-previous")
                if os.path.lexists(saved):
                    os.unlink(saved)
                os.link(target, saved, follow_symlinks=False)
            try:
                os.replace(temp, target)
            except BaseException:
                if saved:
                    os.unlink(saved)
                raise
            done.append((target, saved))
    except BaseException:
        for target, saved in reversed(done):
            if saved:
                os.replace(saved, target)
            else:
                os.unlink(target)
        raise
    for _target, saved in done:
        if saved:
            os.unlink(saved)


def _set_meta(path: str, entry: Entry, owners: bool) -> None:
    if owners:
        os.chown(path, entry.uid, entry.gid)
    os.chmod(path, entry.mode)
