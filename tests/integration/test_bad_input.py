"""Bad input, one table: extra vars to site.yml and scale.yml, inventory values, certificate files and backup
archives. Each row runs its playbook against the session stack with one malformed input, and must fail
with a clear message (the row's) and change nothing: the same containers (IDs, status, start time) and
replica counts, the same live nginx config and TLS files, the files a restore would write, and the LB
still answering /health. The time each refusal took is recorded (section "Bad input")."""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from ansible_collections.tenfold.stack.plugins.module_utils import backup as tb
from ansible_collections.tenfold.stack.plugins.module_utils import lock as tenfold_lock
from conftest import snapshot
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers import EVENTS_LOG, ROOT, SCALE_LOCK, STACK_VARS, Backups, playbook
from pki import pem_pair

pytestmark = pytest.mark.integration


# --- certificate files ----------------------------------------------------------------------------------
# --- backup archives (made from a real backup of the session stack) -------------------------------------
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


def path_traversal(archive: Path, dest: Path) -> Path:
    """The archive with one more member, first, that climbs out of the directory it is restored to."""
    evil = b"* * * * * root true\n"
    info = tarfile.TarInfo(tb.FILES_PREFIX + "/nginx/../../../../etc/cron.d/tenfold-evil")
    info.size = len(evil)
    with tarfile.open(archive, "r:gz") as tin, tarfile.open(dest, "w:gz") as tout:
        tout.addfile(info, io.BytesIO(evil))
        for member in tin:
            tout.addfile(member, tin.extractfile(member) if member.isreg() else None)
    return dest


def other_stacks(archive: Path, dest: Path) -> Path:
    source = dest.parent / "other-nginx"
    source.mkdir()
    (source / "nginx.conf").write_text("events {}\n")
    tb.write_archive(
        str(dest), "someotherstack", [tb.Source("nginx", str(source))], {"backend": 9}, datetime.now(UTC)
    )
    return dest


def random_tar_gz(archive: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(ROOT / "README.md", arcname="nginx/nginx.conf")
    return dest


def not_a_tar(archive: Path, dest: Path) -> Path:
    dest.write_text("this is not an archive\n")
    return dest


# The stack's own ports, for the rows about port clashes.
STACK = yaml.safe_load(STACK_VARS.read_text())
FRONTEND = STACK["app_pools_frontend_port_base"]


# --- the table ------------------------------------------------------------------------------------------
class Kit:
    """What one row needs: a directory of its own, the session stack's backup kit, and the ansible-playbook
    arguments it builds (extra vars, a copy of the inventory with bad values, certificate files, archives)."""

    def __init__(self, tmp: Path, backups: Backups, archive: Path) -> None:
        self.tmp = tmp
        self.backups = backups
        self.archive = archive
        self.vars_file = STACK_VARS
        self.lock: tuple[Path, tenfold_lock.Owner] | None = None

    def hold_scale_lock(self) -> list[str]:
        """Hold the stack's scale lock as a live run would (this process owns it) until release_lock()."""
        path = SCALE_LOCK
        owner = tenfold_lock.owner_for(os.getpid(), run="test_bad_input: a scale run in progress")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:  # a scale run of this stack is under way: fail
            json.dump(asdict(owner), handle)
        self.lock = (path, owner)
        return []

    def release_lock(self) -> bool:
        """Give the lock back; whether it was still ours (a refused run must not have taken it)."""
        return self.lock is None or tenfold_lock.release(str(self.lock[0]), self.lock[1])

    def inventory(self, group: str, values: dict) -> list[str]:
        """A copy of inventories/local with `values` in group_vars/<group>.yml; the stack's vars file (extra
        vars, which win over the inventory) is written without them."""
        inventory = self.tmp / "inventory"
        shutil.copytree(ROOT / "inventories" / "local", inventory)
        target = inventory / "group_vars" / f"{group}.yml"
        current = yaml.safe_load(target.read_text()) if target.exists() else {}
        target.write_text(yaml.safe_dump({**(current or {}), **values}))
        stack_vars = yaml.safe_load(STACK_VARS.read_text())
        self.vars_file = self.tmp / "stack.yml"
        self.vars_file.write_text(yaml.safe_dump({k: v for k, v in stack_vars.items() if k not in values}))
        return ["-i", str(inventory)]

    def tls(self, make: Callable[[Path], tuple[Path, Path | None]]) -> list[str]:
        cert, key = make(self.tmp)
        args = ["-e", f"tls_certificate_src={cert}"]
        return args + (["-e", f"tls_private_key_src={key}"] if key is not None else [])

    def restore(self, make: Callable[[Path, Path], Path] | str) -> list[str]:
        archive = make if isinstance(make, str) else make(self.archive, self.tmp / "bad.tar.gz")
        return self.backups.args(f"backup={archive}")


@dataclass(frozen=True)
class Row:
    id: str
    playbook: str
    input: str
    args: Callable[[Kit], list[str]]
    message: str
    prefix: str = ""  # what the output says before the row's message, where that depends on the run


def extra(id: str, playbook_name: str, pairs: str, message: str) -> Row:
    """Extra vars, `pairs` as on the command line ("direction=up step=0")."""
    args = [arg for pair in pairs.split() for arg in ("-e", pair)]
    return Row(id, playbook_name, " ".join(f"-e {p}" for p in pairs.split()), lambda k: args, message)


def injected(id: str, playbook_name: str, pairs: str, variable: str, value, message: str) -> Row:
    """Extra vars `pairs` plus one variable set, as JSON, to a value meant to reach nginx or Docker raw."""
    args = [arg for pair in pairs.split() for arg in ("-e", pair)] + ["-e", json.dumps({variable: value})]
    shown = " ".join(f"-e {p}" for p in pairs.split()) + f" -e '{json.dumps({variable: value})}'"
    return Row(id, playbook_name, shown.strip(), lambda k: args, message)


def locked(id: str, pairs: str, message: str) -> Row:
    """A scale request made while another run holds the scale lock (given 20 s to let go)."""
    args = [arg for pair in [*pairs.split(), "app_pools_scale_lock_timeout=20"] for arg in ("-e", pair)]
    shown = " ".join(f"-e {p}" for p in pairs.split()) + ", while another scale run holds the lock"
    return Row(id, "scale.yml", shown, lambda k: k.hold_scale_lock() + args, message)


def inventory(id: str, values: dict, message: str, group: str = "all") -> Row:
    shown = ", ".join(f"{k}: {v!r}" for k, v in values.items())
    return Row(
        id, "site.yml", f"group_vars/{group}.yml: {shown}", lambda k: k.inventory(group, values), message
    )


def certificate(id: str, shown: str, make, message: str) -> Row:
    return Row(id, "site.yml", shown, lambda k: k.tls(make), message)


def archive(id: str, shown: str, make, message: str) -> Row:
    return Row(
        id, "restore.yml", shown, lambda k: k.restore(make), message, "backup not used, nothing changed: "
    )


def good_pair(d: Path) -> tuple[Path, Path]:
    return pem_pair(d, "good")


def write(d: Path, name: str, data: bytes) -> Path:
    path = d / name
    path.write_bytes(data)
    return path


def der(d: Path) -> Path:
    cert = x509.load_pem_x509_certificate(good_pair(d)[0].read_bytes())
    return write(d, "cert.der", cert.public_bytes(serialization.Encoding.DER))


SCALE = "scale request rejected, nothing changed: "
ROWS = [
    # extra vars to site.yml: the roles' argument specs and tasks/validate.yml, in the preflight play
    extra("site-replicas-above-max", "site.yml", "app_pools_backend_replicas=11",
          "app_pools_backend_replicas=11 must lie within app_pools_backend_min_replicas=3 and "
          "app_pools_backend_max_replicas=10"),
    extra("site-replicas-below-min", "site.yml", "app_pools_frontend_replicas=2",
          "app_pools_frontend_replicas=2 must lie within app_pools_frontend_min_replicas=3"),
    extra("site-replicas-not-a-number", "site.yml", "app_pools_backend_replicas=abc",
          "argument 'app_pools_backend_replicas' is of type str and we were unable to convert to int"),
    extra("site-warm-replicas-negative", "site.yml", "app_pools_frontend_warm_replicas=-1",
          "app_pools_frontend_warm_replicas=-1 must be 0 or more"),
    extra("site-unknown-frontend-method", "site.yml", "nginx_lb_frontend_method=random",
          "value of nginx_lb_frontend_method must be one of: hash, ip_hash, got: random"),
    extra("site-unknown-backend-method", "site.yml", "nginx_lb_backend_method=fastest",
          "value of nginx_lb_backend_method must be one of: least_conn, round_robin, ip_hash, hash, "
          "got: fastest"),
    extra("site-port-out-of-range", "site.yml", "nginx_lb_https_port=70000",
          "nginx_lb_https_port=70000 must be a port number from 1 to 65535"),
    extra("site-port-not-a-number", "site.yml", "nginx_lb_http_port=eighty",
          "argument 'nginx_lb_http_port' is of type str and we were unable to convert to int"),
    extra("site-tcp-retries2-too-low", "site.yml", "nginx_lb_tcp_retries2=1",
          "nginx_lb_tcp_retries2=1 must be 0 (the host's own setting) or from 3 to 15"),
    # strings meant to reach nginx's config or a container raw: the strict forms (tenfold.stack.bad_forms)
    injected("site-injected-server-block", "site.yml", "", "nginx_lb_upstream_fail_timeout",
             "10s; } server { listen 127.0.0.1:18888; return 200 injected; } upstream x {",
             "nginx_lb_upstream_fail_timeout must be an nginx time such as 10s, 500ms or 1m30s; not '10s; }"),
    injected("scale-injected-env", "scale.yml", "pool=backend replicas=4", "app_pools_backend_env",
             {"MODE": "fast\nLD_PRELOAD=/tmp/x.so"},
             "app_pools_backend_env must be a dict of environment variable names"),
    injected("scale-injected-image", "scale.yml", "pool=backend replicas=4", "app_pools_backend_image",
             "tenfold/backend:local --privileged",
             "app_pools_backend_image must be an image reference"),
    # extra vars to scale.yml: tenfold.stack.scale_plan, before any replica moves
    extra("scale-direction-sideways", "scale.yml", "direction=sideways",
          SCALE + "direction must be 'up' or 'down', got 'sideways'"),
    extra("scale-step-zero", "scale.yml", "direction=up step=0", SCALE + "step must be 1 or more, got 0"),
    extra("scale-step-negative", "scale.yml", "direction=up step=-1",
          SCALE + "step must be 1 or more, got -1"),
    extra("scale-step-not-a-number", "scale.yml", "direction=up step=abc",
          SCALE + "step must be a whole number, got 'abc'"),
    extra("scale-replicas-not-a-number", "scale.yml", "pool=backend replicas=abc",
          SCALE + "replicas must be a whole number, got 'abc'"),
    extra("scale-replicas-negative", "scale.yml", "pool=backend replicas=-1",
          SCALE + "replicas must be 0 or more, got -1"),
    extra("scale-unknown-pool", "scale.yml", "direction=up pool=unknown",
          SCALE + "pool='unknown' is not a pool of this stack"),
    extra("scale-replicas-without-pool", "scale.yml", "replicas=5",
          SCALE + "replicas needs pool: an absolute count applies to one pool"),
    locked("scale-bad-request-while-locked", "direction=sideways",
           SCALE + "direction must be 'up' or 'down', got 'sideways'"),
    # the state host and directory (the scale lock and events): refused before anything changes
    extra("scale-state-host-not-in-inventory", "scale.yml", "direction=up tenfold_state_host=lb9",
          "tenfold_state_host='lb9' is not a host of the inventory (its hosts: localhost)"),
    extra("scale-state-dir-relative", "scale.yml", "direction=up tenfold_state_dir=logs/state",
          "tenfold_state_dir='logs/state' must be an absolute path"),
    extra("scale-state-dir-dotdot", "scale.yml", "direction=up tenfold_state_dir=/var/lib/../etc",
          "tenfold_state_dir='/var/lib/../etc' must not hold '..'"),
    extra("site-state-host-not-in-inventory", "site.yml", "tenfold_state_host=lb9",
          "tenfold_state_host='lb9' is not a host of the inventory (its hosts: localhost)"),
    # inventory values: a copy of inventories/local with one bad group variable
    inventory("inv-replicas-negative", {"app_pools_backend_replicas": -1},
              "app_pools_backend_replicas=-1 must lie within app_pools_backend_min_replicas=3"),
    inventory("inv-replicas-fraction", {"app_pools_frontend_replicas": 2.5},
              "argument 'app_pools_frontend_replicas' is of type float and we were unable to convert to int"),
    inventory("inv-stack-name", {"tenfold_stack": "Tenfold Prod"},
              "tenfold_stack=Tenfold Prod must be a plain name of at most 63 lowercase letters"),
    inventory("inv-memory-lots", {"app_pools_backend_memory": "lots"},
              "app_pools_backend_memory must be a memory size such as 512m or 1g; not 'lots'"),
    inventory("inv-pool-ports-overlap", {"app_pools_backend_port_base": FRONTEND + 5},
              f"the frontend ports ({FRONTEND + 1}-{FRONTEND + 10}) overlap the backend ports "
              f"({FRONTEND + 6}-{FRONTEND + 15})"),
    inventory("inv-lb-port-is-an-app-port", {"nginx_lb_https_port": FRONTEND + 2},
              f"nginx_lb_https_port={FRONTEND + 2} is a port the app replicas publish on "
              f"(frontend {FRONTEND + 1}-{FRONTEND + 10}"),
    inventory("inv-allowlist-not-a-network", {"nginx_lb_allowlist": ["127.0.3.0/24", "10.0.0.0/33", "lan"]},
              "every entry of nginx_lb_allowlist must be an IP address or a network such as 10.0.0.0/8; "
              "these are not: ['10.0.0.0/33', 'lan']"),
    inventory("inv-docker-host-bind-address", {"app_pools_bind_address": "docker1.internal"},
              "app_pools_bind_address=docker1.internal must be an IP address of the Docker host",
              group="tenfold_docker"),
    inventory("inv-image-empty", {"app_pools_frontend_image": ""},
              "app_pools_frontend_image must be an image reference (name[:tag][@digest]) such as "
              "tenfold/backend:local; not ''"),
    # certificate files for the tls role (tls_certificate_src, tls_private_key_src): the tls_problems filter
    certificate("tls-certificate-missing", "tls_certificate_src=/nonexistent/fullchain.pem",
                lambda d: (Path("/nonexistent/fullchain.pem"), good_pair(d)[1]),
                "tls_certificate_src=/nonexistent/fullchain.pem does not exist on the controller"),
    certificate("tls-certificate-not-pem", "a text file as the certificate",
                lambda d: (write(d, "cert.pem", b"hello, not a certificate\n"), good_pair(d)[1]),
                "cert.pem is not a PEM certificate: it has no '-----BEGIN CERTIFICATE-----' block"),
    certificate("tls-certificate-der", "the certificate in DER, not PEM",
                lambda d: (der(d), d / "good-key.pem"), "cert.der is not a PEM certificate"),
    certificate("tls-certificate-empty", "an empty certificate file",
                lambda d: (write(d, "empty.pem", b""), good_pair(d)[1]), "empty.pem is empty"),
    certificate("tls-key-empty", "an empty key file",
                lambda d: (good_pair(d)[0], write(d, "empty-key.pem", b"")), "empty-key.pem is empty"),
    certificate("tls-key-of-another-certificate", "a key that does not match the certificate",
                lambda d: (good_pair(d)[0], pem_pair(d, "other")[1]),
                "good-cert.pem does not match the private key"),
    certificate("tls-certificate-expired", "a certificate that expired yesterday",
                lambda d: pem_pair(d, "old", days=(-31, -1)), "old-cert.pem expired on"),
    certificate("tls-certificate-without-key", "tls_certificate_src without tls_private_key_src",
                lambda d: (good_pair(d)[0], None), "set both tls_certificate_src and tls_private_key_src"),
    certificate("tls-key-encrypted", "a key encrypted with a passphrase",
                lambda d: pem_pair(d, "locked", password=b"secret"),
                "locked-key.pem is encrypted with a passphrase, which nginx cannot ask for"),
    certificate("tls-files-swapped", "the key as the certificate and the certificate as the key",
                lambda d: tuple(reversed(good_pair(d))),
                "(it holds a private key: are the two files swapped?)"),
    # backup archives for restore.yml: tenfold.stack.backup reads and verifies the whole archive first
    archive("backup-truncated", "the archive's last third cut off", truncated,
            "bad.tar.gz is truncated or corrupt"),
    archive("backup-checksum-mismatch", "nginx.conf changed inside the archive", tampered,
            "tenfold-backup/files/nginx/nginx.conf does not match its SHA-256 in the manifest"),
    archive("backup-of-another-stack", "a valid archive of stack someotherstack", other_stacks,
            f"is a backup of stack 'someotherstack', not of stack '{STACK['tenfold_stack']}': it is not "
            "restored here"),
    archive("backup-path-traversal", "a member files/nginx/../../../../etc/cron.d/tenfold-evil",
            path_traversal,
            "bad.tar.gz: unsafe path 'tenfold-backup/files/nginx/../../../../etc/cron.d/tenfold-evil' in the "
            "archive"),
    archive("backup-not-a-tenfold-backup", "a tar.gz of README.md", random_tar_gz,
            "member 'nginx/nginx.conf' lies outside tenfold-backup/files/: this is not a tenfold backup"),
    archive("backup-not-a-tar", "a text file", not_a_tar,
            "bad.tar.gz is not a gzip-compressed tar archive, or it is truncated"),
    archive("backup-missing-file", "backup=/nonexistent/backup.tar.gz", "/nonexistent/backup.tar.gz",
            "backup /nonexistent/backup.tar.gz does not exist or is not a file"),
    archive("backup-not-named", "backup= (empty)", "",
            "say which backup to use: -e backup=latest or -e backup=<archive file>"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_input_kit(stack, tmp_path_factory):
    """One real backup of the session stack (the archive the bad ones are made from), then the live
    nginx.conf changed by a comment, so that a restore let through would change a file; put back after."""
    backups = Backups(stack, tmp_path_factory.mktemp("bad-input"))
    made = backups.backup()
    assert made.rc == 0, made.output[-3000:]
    [good] = backups.archives()
    conf = backups.nginx / "nginx.conf"
    original = conf.read_bytes()
    conf.write_bytes(original + b"# changed after the backup\n")
    try:
        yield backups, good
    finally:
        conf.write_bytes(original)


@pytest.fixture(scope="module")
def refusals(figures):
    """Seconds each row's playbook took to refuse its input; recorded when the module ends."""
    times: dict[str, float] = {}
    yield times
    if times:
        slowest = max(times, key=times.get)
        figures.record("Bad input", "malformed inputs in the table", len(ROWS), note=f"{len(times)} ran")
        figures.record(
            "Bad input",
            "time to refuse a bad input, median",
            round(statistics.median(times.values()), 2),
            "s",
        )
        figures.record("Bad input", "time to refuse a bad input, max", round(times[slowest], 2), "s", slowest)


def restore_files(backups: Backups) -> dict:
    """Everything a restore would write (not the scale events: every run adds one)."""
    files = backups.snapshot()
    files.pop(str(EVENTS_LOG), None)
    return files


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_fails_clearly_and_changes_nothing(
    engine, stack, bad_input_kit, refusals, figures, tmp_path, row
):
    backups, good = bad_input_kit
    kit = Kit(tmp_path, backups, good)
    try:
        args = row.args(kit)
        before, files = snapshot(engine, stack), restore_files(backups)
        started = time.monotonic()
        run = playbook(row.playbook, *args, vars_file=kit.vars_file, timeout=300)
        refusals[row.id] = time.monotonic() - started
    finally:
        lock_kept = kit.release_lock()
    assert run.rc != 0, run.output[-3000:]
    assert row.message in run.output and row.prefix in run.output, run.output[-3000:]
    assert snapshot(engine, stack) == before
    assert restore_files(backups) == files
    assert lock_kept, "the refused run took or removed another run's scale lock"
    assert stack.client().get("/health").status == 200
    figures.record(
        "Bad input: the table",
        f"`{row.id}`: {row.playbook} {row.input}",
        f"refused in {refusals[row.id]:.1f}",
        "s",
        note=row.prefix + row.message,
    )
