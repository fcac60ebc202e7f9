"""Drive a test stack: run the project's playbooks and talk HTTPS to the load balancer."""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ansible_collections.tenfold.stack.plugins.module_utils import backup as tb
from ansible_collections.tenfold.stack.plugins.module_utils import state as tenfold_state

ROOT = Path(__file__).resolve().parents[2]
# The collection tenfold.stack, as the checkout holds it (ansible.cfg's collections_path).
COLLECTION = ROOT / "collections" / "ansible_collections" / "tenfold" / "stack"
# TENFOLD_IT_STACK_VARS names another vars file (its own tenfold_stack and ports), so that two runs of the
# suite on one machine do not share a stack.
STACK_VARS = Path(
    os.environ.get("TENFOLD_IT_STACK_VARS") or Path(__file__).resolve().parent / "stack.yml"
).resolve()
BIN = ROOT / ".venv" / "bin"
# The TLS scanner sslyze, in the venv of its own that `make sslyze` makes (requirements-sslyze.txt).
SSLYZE = ROOT / ".venv-sslyze" / "bin" / "sslyze"
# The test stack's shared scale state: on its state host (localhost), in the stack's default state directory
# (/var/lib/tenfold/<stack>/scale/), where scale.yml, scale-check.yml, AWX-style runs and the monitor keep it.
STATE_DIR = Path(tenfold_state.default_dir(yaml.safe_load(STACK_VARS.read_text())["tenfold_stack"]))
EVENTS_LOG = Path(tenfold_state.events_path(str(STATE_DIR)))
SCALE_LOCK = Path(tenfold_state.lock_path(str(STATE_DIR)))
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def access_log(stack) -> Path:
    return Path(f"/var/log/tenfold/{stack.name}/access.json.log")


def backend_entries(stack, start: int, end: int) -> list[dict]:
    """The backend pool's access log entries written between two offsets."""
    with access_log(stack).open("rb") as handle:
        handle.seek(start)
        lines = handle.read(end - start).decode(errors="replace").splitlines()
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by an offset
        if entry.get("pool") == "backend":
            entries.append(entry)
    return entries


def events_count() -> int:
    """Scale events recorded so far (the tenfold.stack.scale_events callback's log of the test session)."""
    return len(EVENTS_LOG.read_text().splitlines()) if EVENTS_LOG.exists() else 0


def events_since(count: int) -> list[dict]:
    """The scale events recorded after the first `count`."""
    lines = EVENTS_LOG.read_text().splitlines() if EVENTS_LOG.exists() else []
    return [json.loads(line) for line in lines[count:]]


def wait_for(predicate, timeout: float, step: float = 0.5):
    """predicate()'s first truthy value within timeout seconds (polled every step), else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


@dataclass
class Run:
    rc: int
    output: str

    @property
    def changed(self) -> int:
        return sum(int(m.group(3)) for m in RECAP.finditer(self.output))

    @property
    def failed(self) -> int:
        return sum(int(m.group(5)) for m in RECAP.finditer(self.output))


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }


def playbook(name: str, *args: str, vars_file: Path | None = STACK_VARS, timeout: int = 900) -> Run:
    """Run a playbook against the suite's stack (vars_file), or, with vars_file None, as `args` say."""
    env = ansible_env()
    extra = ["-e", f"@{vars_file}"] if vars_file else []
    cmd = [str(BIN / "ansible-playbook"), name, *extra, *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    cookies: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@functools.cache
def unverified_context() -> ssl.SSLContext:
    """A TLS client context that does not verify the LB's certificate (self-signed), made once: a context per
    request would load the system's CA store each time, tens of ms that would count as request latency."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Client:
    """One HTTP(S) client with its own source address and cookie jar."""

    port: int
    source: str = "127.0.0.1"
    tls: bool = True
    cookies: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def context(self) -> ssl.SSLContext:
        return unverified_context()

    def connection(self, timeout: float = 15.0) -> http.client.HTTPConnection:
        """A connection from this client's address (not yet connected), for requests `get` cannot make."""
        if self.tls:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, source_address=(self.source, 0), context=self.context()
            )
        return http.client.HTTPConnection(
            self.host, self.port, timeout=timeout, source_address=(self.source, 0)
        )

    def get(self, path: str, timeout: float = 15.0, headers: dict[str, str] | None = None) -> Response:
        conn = self.connection(timeout)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request("GET", path, headers=headers)
            response = read_response(conn.getresponse())
            self.cookies.update(response.cookies)
            return response
        finally:
            conn.close()


def read_response(raw: http.client.HTTPResponse) -> Response:
    """The whole response: status, headers (lower-case names, Set-Cookie apart), cookies and body."""
    body = raw.read()
    cookies = {}
    for key, value in raw.getheaders():
        if key.lower() == "set-cookie":
            name, _, rest = value.partition("=")
            cookies[name.strip()] = rest.split(";", 1)[0]
    headers = {k.lower(): v for k, v in raw.getheaders() if k.lower() != "set-cookie"}
    return Response(raw.status, headers, cookies, body)


SECURITY_HEADERS = (
    "strict-transport-security",
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
)


def assert_security_headers(response: Response) -> None:
    """The LB's security headers (security_headers.conf.j2) are on the response; nginx's version is not."""
    missing = [h for h in SECURITY_HEADERS if h not in response.headers]
    assert not missing, f"status {response.status}: missing {missing}"
    max_age = int(response.headers["strict-transport-security"].split("max-age=")[1].split(";")[0])
    assert max_age >= 31536000
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "nginx/" not in response.headers.get("server", "")


def assert_lb_error_page(response: Response, status: int, reason: str) -> None:
    """The LB answered `status` itself, with its own error page (error_page.html.j2) and the headers."""
    assert response.status == status, f"expected {status}, got {response.status}: {response.body[:200]!r}"
    assert f"<h1>{status} {reason}</h1>".encode() in response.body, response.body[:300]
    assert response.headers.get("content-type", "").startswith("text/html")
    assert_security_headers(response)


def nginx_seconds(value: str | int) -> float:
    """An nginx time such as 10s, 500ms, 1m or 30 (seconds), in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value)).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


def nginx_bytes(value: str | int) -> int:
    """An nginx size such as 10m, 64k or 1024 (bytes), in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG])?", str(value)).groups()
    return int(number) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, None: 1}[unit and unit.lower()]


@dataclass
class Figures:
    """Measurements the reliability tests take on the way, for docs/reliability.md.

    A test records what it measured (the assertions stay in the test). With TENFOLD_FIGURES set to a path,
    the session writes them there as JSON at its end; `scripts/reliability_report.py` runs the tests that way
    and renders the doc from the file. Without it they are only kept in memory.
    """

    rows: list[dict] = field(default_factory=list)

    def record(self, section: str, label: str, value: object, unit: str = "", note: str = "") -> None:
        """One figure: `section` groups it in the doc (e.g. "TLS", "Faults"), `label` says what it is."""
        self.rows.append({"section": section, "label": label, "value": value, "unit": unit, "note": note})

    def write(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.rows, indent=2) + "\n")


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
