"""Drive a test stack: run the project's playbooks and talk HTTPS to the load balancer."""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# TENFOLD_IT_STACK_VARS names another vars file (its own tenfold_stack and ports), so that two runs of the
# suite on one machine do not share a stack.
STACK_VARS = Path(
    os.environ.get("TENFOLD_IT_STACK_VARS") or Path(__file__).resolve().parent / "stack.yml"
).resolve()
BIN = ROOT / ".venv" / "bin"
# Scale events of the test stack go to a file of their own, not to the project's logs/.
EVENTS_LOG = Path(tempfile.gettempdir()) / f"tenfoldit-scale-events-{os.getpid()}.jsonl"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


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
        "TENFOLD_SCALE_EVENTS_LOG": str(EVENTS_LOG),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }


def playbook(name: str, *args: str, vars_file: Path = STACK_VARS, timeout: int = 900) -> Run:
    env = ansible_env()
    cmd = [str(BIN / "ansible-playbook"), name, "-e", f"@{vars_file}", *args]
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


@dataclass
class Client:
    """One HTTP(S) client with its own source address and cookie jar."""

    port: int
    source: str = "127.0.0.1"
    tls: bool = True
    cookies: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def get(self, path: str, timeout: float = 15.0) -> Response:
        if self.tls:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, source_address=(self.source, 0), context=self.context()
            )
        else:
            conn = http.client.HTTPConnection(
                self.host, self.port, timeout=timeout, source_address=(self.source, 0)
            )
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request("GET", path, headers=headers)
            raw = conn.getresponse()
            body = raw.read()
            set_cookies = {}
            for key, value in raw.getheaders():
                if key.lower() == "set-cookie":
                    name, _, rest = value.partition("=")
                    set_cookies[name.strip()] = rest.split(";", 1)[0]
            self.cookies.update(set_cookies)
            headers_out = {k.lower(): v for k, v in raw.getheaders() if k.lower() != "set-cookie"}
            return Response(raw.status, headers_out, set_cookies, body)
        finally:
            conn.close()


@dataclass
class Figures:
    """Measurements the reliability tests take on the way, for docs/reliability.md.

    A test records what it measured (the assertions stay in the test). With TENFOLD_FIGURES set to a path,
    the session writes them there as JSON at its end; `scripts/reliability-report.py` runs the tests that way
    and renders the doc from the file. Without it they are only kept in memory.
    """

    rows: list[dict] = field(default_factory=list)

    def record(self, section: str, label: str, value: object, unit: str = "", note: str = "") -> None:
        """One figure: `section` groups it in the doc (e.g. "TLS", "Faults"), `label` says what it is."""
        self.rows.append({"section": section, "label": label, "value": value, "unit": unit, "note": note})

    def write(self, path: str) -> None:
        Path(path).write_text(json.dumps(self.rows, indent=2) + "\n")
