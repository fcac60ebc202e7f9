"""The nginx_lb role's render entry point, without a running LB.

Configs for 1, 3 and 10 replicas per pool pass `nginx -t` in the nginx image, an empty pool still renders a
valid config, and a value nginx rejects fails the run with nginx's own message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "tests" / "playbooks" / "nginx_render.yml"
IMAGE = "tenfold/nginx:local"
SIZES = (1, 3, 10)


@dataclass
class Run:
    rc: int
    output: str


def image_present() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not image_present(), reason=f"needs Docker and the {IMAGE} image (make images)"
)


def upstreams(replicas: int) -> dict[str, list[str]]:
    return {
        "frontend": [f"127.0.0.1:{18100 + i}" for i in range(1, replicas + 1)],
        "backend": [f"127.0.0.1:{18200 + i}" for i in range(1, replicas + 1)],
    }


CASES: list[dict] = [
    *({"name": f"replicas-{n}", "upstreams": upstreams(n)} for n in SIZES),
    {"name": "empty-pools", "upstreams": {"frontend": [], "backend": []}},
    {
        "name": "ip-hash-round-robin",
        "upstreams": upstreams(3),
        "frontend_method": "ip_hash",
        "backend_method": "round_robin",
    },
    {"name": "hash-hash", "upstreams": upstreams(3), "backend_method": "hash"},
    {
        "name": "ip-hash-ip-hash",
        "upstreams": upstreams(3),
        "frontend_method": "ip_hash",
        "backend_method": "ip_hash",
    },
]


def render(root: Path, cases: list[dict], *extra: str) -> Run:
    vars_file = root / "render-vars.json"
    vars_file.write_text(json.dumps({"render_root": str(root), "render_cases": cases}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    venv_playbook = ROOT / ".venv" / "bin" / "ansible-playbook"
    playbook = str(venv_playbook) if venv_playbook.exists() else "ansible-playbook"
    proc = subprocess.run(
        [playbook, str(PLAYBOOK), "-e", f"@{vars_file}", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


def nginx_t(conf_dir: Path, tls_dir: Path) -> subprocess.CompletedProcess:
    """`nginx -t` in the nginx image, with the config and TLS material where the LB container has them."""
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "nginx",
            "--mount",
            f"type=bind,source={conf_dir},target=/etc/tenfold-nginx,readonly",
            "--mount",
            f"type=bind,source={tls_dir},target=/etc/tenfold-tls,readonly",
            "--tmpfs",
            "/var/log/tenfold-nginx",
            IMAGE,
            "-t",
            "-e",
            "/dev/null",
            "-c",
            "/etc/tenfold-nginx/nginx.conf",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def upstream_servers(conf_dir: Path) -> dict[str, list[str]]:
    text = (conf_dir / "upstreams.conf").read_text()
    blocks = dict(re.findall(r"upstream tenfold_(frontend|backend) \{(.*?)\n\}", text, re.S))
    return {pool: re.findall(r"^\s*server (\S+)", body, re.M) for pool, body in blocks.items()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nginx-render")
    run = render(root, CASES)
    assert run.rc == 0, run.output[-5000:]
    return root


@pytest.mark.parametrize("replicas", SIZES)
def test_config_for_n_replicas_per_pool_passes_nginx_t(rendered, replicas):
    conf_dir = rendered / f"replicas-{replicas}"
    result = nginx_t(conf_dir, rendered / "tls")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    servers = upstream_servers(conf_dir)
    assert servers == {pool: sorted(members) for pool, members in upstreams(replicas).items()}


def test_each_frontend_replica_gets_a_pinned_upstream_with_the_others_as_backups(rendered):
    text = (rendered / "replicas-3" / "upstreams.conf").read_text()
    pinned = re.findall(r"upstream tenfold_frontend_([0-9a-f]{10}) \{(.*?)\n\}", text, re.S)
    assert len(pinned) == 3
    primaries = set()
    for route, body in pinned:
        servers = re.findall(r"^\s*server (\S+)( backup)?", body, re.M)
        assert len(servers) == 3
        primary = [address for address, backup in servers if not backup]
        assert len(primary) == 1
        primaries.add(primary[0])
        # The route cookie's value leads to this upstream, and the replica's address back to the route.
        assert f"{route} tenfold_frontend_{route};" in text
        assert f'"{primary[0]}" {route};' in text
    assert primaries == set(upstreams(3)["frontend"])


def test_ip_hash_frontend_has_no_route_cookie(rendered):
    text = (rendered / "ip-hash-round-robin" / "upstreams.conf").read_text()
    assert "tenfold_frontend_upstream" not in text
    assert "Set-Cookie" not in (rendered / "ip-hash-round-robin" / "nginx.conf").read_text()


def test_empty_pools_render_a_down_placeholder_that_nginx_accepts(rendered):
    conf_dir = rendered / "empty-pools"
    result = nginx_t(conf_dir, rendered / "tls")
    assert result.returncode == 0, result.stderr
    assert upstream_servers(conf_dir) == {"frontend": ["127.0.0.1:9"], "backend": ["127.0.0.1:9"]}
    assert (conf_dir / "upstreams.conf").read_text().count("server 127.0.0.1:9 down;") == 2


@pytest.mark.parametrize("case", ["ip-hash-round-robin", "hash-hash", "ip-hash-ip-hash"])
def test_every_balancing_method_passes_nginx_t(rendered, case):
    result = nginx_t(rendered / case, rendered / "tls")
    assert result.returncode == 0, result.stderr


def test_default_frontend_hashes_on_the_route_cookie_and_backend_uses_least_conn(rendered):
    text = (rendered / "replicas-3" / "upstreams.conf").read_text()
    frontend, backend = text.split("upstream tenfold_backend")
    assert "hash $tenfold_route consistent;" in frontend
    assert "least_conn;" in backend
    # nginx requires keepalive after the balancing method.
    assert frontend.index("hash $tenfold_route") < frontend.index("keepalive ")
    nginx_conf = (rendered / "replicas-3" / "nginx.conf").read_text()
    assert "add_header Set-Cookie $tenfold_route_cookie always;" in nginx_conf


def test_ip_hash_mode_sets_no_route_cookie(rendered):
    text = (rendered / "ip-hash-round-robin" / "upstreams.conf").read_text()
    assert "ip_hash;" in text
    assert "Set-Cookie" not in (rendered / "ip-hash-round-robin" / "nginx.conf").read_text()


def test_every_location_that_adds_headers_includes_the_security_headers(rendered):
    text = (rendered / "replicas-3" / "nginx.conf").read_text()
    for block in re.findall(r"location [^{]*\{(.*?)\n        \}", text, re.S):
        if "add_header" in block or "expires" in block:
            assert "security_headers.conf" in block, block


def test_a_value_nginx_rejects_fails_with_nginxs_own_message(tmp_path):
    case = {"name": "broken", "upstreams": upstreams(3)}
    run = render(tmp_path, [case], "-e", "nginx_lb_client_max_body_size=10q")
    assert run.rc != 0
    assert 'nginx: [emerg] "client_max_body_size" directive invalid value' in run.output, run.output[-3000:]
    assert "configuration file /etc/tenfold-nginx/nginx.conf test failed" in run.output


def test_an_unknown_balancing_method_fails_before_anything_is_rendered(tmp_path):
    case = {"name": "unknown-method", "upstreams": upstreams(1), "frontend_method": "random"}
    run = render(tmp_path, [case])
    assert run.rc != 0
    assert "nginx_lb_frontend_method" in run.output, run.output[-3000:]
    assert not (tmp_path / "unknown-method").exists()


def test_a_malformed_upstream_server_fails_before_anything_is_rendered(tmp_path):
    case = {"name": "bad-server", "upstreams": {"frontend": ["127.0.0.1:8080; evil"], "backend": []}}
    run = render(tmp_path, [case])
    assert run.rc != 0
    assert "nginx_lb_upstreams.frontend" in run.output, run.output[-3000:]
    assert not (tmp_path / "bad-server").exists()
