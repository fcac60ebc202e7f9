"""The nginx_lb role's render entry point, without a running LB.

Every combination of balancing methods renders a config that passes `nginx -t` in the nginx image (with the
Lua module loaded and its init block run). The pools' members are data set through the LB's members API,
not configuration: each upstream is a placeholder that the Lua balancer fills, whatever members the role is
given. A value nginx rejects fails the run with nginx's own message, and one the role checks fails before
anything is rendered.
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
from conftest import COLLECTION

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "tests" / "playbooks" / "nginx_render.yml"
IMAGE = "tenfold/nginx:local"
FRONTEND_METHODS = ("hash", "ip_hash")
BACKEND_METHODS = ("least_conn", "round_robin", "ip_hash", "hash")
POOLS = ("frontend", "backend")
LUA_FILES = ("api.lua", "balancer.lua", "members.lua", "stats.lua")


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


def members(replicas: int) -> dict[str, list[dict]]:
    return {
        pool: [
            {"id": f"rendertest-{pool}-{i}", "address": "127.0.0.1", "port": base + i}
            for i in range(1, replicas + 1)
        ]
        for pool, base in (("frontend", 18100), ("backend", 18200))
    }


def combo(frontend: str, backend: str) -> str:
    return f"{frontend}-{backend}".replace("_", "-")


# Each method of each pool once (the methods only reach the Lua balancer's init block and the cookie filter;
# a render costs seconds of Ansible tasks, so not every pairing).
COMBOS = [("hash", "least_conn"), ("ip_hash", "round_robin"), ("hash", "ip_hash"), ("ip_hash", "hash")]
assert {f for f, _ in COMBOS} == set(FRONTEND_METHODS) and {b for _, b in COMBOS} == set(BACKEND_METHODS)
CASES: list[dict] = [
    *({"name": combo(f, b), "frontend_method": f, "backend_method": b} for f, b in COMBOS[:-1]),
    {
        "name": combo(*COMBOS[-1]),
        "frontend_method": "ip_hash",
        "backend_method": "hash",
        "fail_timeout": "1m30s",
    },
    # Members given to the role change no rendered file (the default methods: as hash-least-conn).
    {"name": "with-members", "members": members(10)},
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


def upstream_blocks(conf_dir: Path) -> dict[str, str]:
    text = (conf_dir / "upstreams.conf").read_text()
    return dict(re.findall(r"^upstream tenfold_(\S+) \{(.*?)\n\}", text, re.S | re.M))


def init_block(conf_dir: Path) -> str:
    text = (conf_dir / "nginx.conf").read_text()
    match = re.search(r"init_by_lua_block \{(.*?)\n    \}", text, re.S)
    assert match, "nginx.conf has no init_by_lua_block"
    return match.group(1)


def pool_methods(conf_dir: Path) -> dict[str, str]:
    return dict(re.findall(r'^\s*(\w+) = \{ method = "(\w+)"', init_block(conf_dir), re.M))


def balancer_setting(conf_dir: Path, name: str) -> str:
    match = re.search(rf"^\s*{name} = ([^,\n]+),$", init_block(conf_dir), re.M)
    assert match, f"the init block sets no {name}"
    return match.group(1)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nginx-render")
    run = render(root, CASES)
    assert run.rc == 0, run.output[-5000:]
    return root


@pytest.mark.parametrize(("frontend", "backend"), COMBOS)
def test_every_method_combination_passes_nginx_t(rendered, frontend, backend):
    result = nginx_t(rendered / combo(frontend, backend), rendered / "tls")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_case_with_members_passes_nginx_t(rendered):
    result = nginx_t(rendered / "with-members", rendered / "tls")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("frontend", "backend"), COMBOS)
def test_each_upstream_is_a_placeholder_balanced_in_lua_with_keepalive(rendered, frontend, backend):
    blocks = upstream_blocks(rendered / combo(frontend, backend))
    assert set(blocks) == set(POOLS)
    for pool, body in blocks.items():
        lines = [line.strip() for line in body.strip().splitlines()]
        assert lines[:2] == [
            "server 127.0.0.1:9 down;",
            f'balancer_by_lua_block {{ require("tenfold.balancer").balance("{pool}") }}',
        ], body
        # Only the placeholder: no member, and no nginx balancing method (the Lua balancer picks).
        assert [line for line in lines if line.startswith("server ")] == ["server 127.0.0.1:9 down;"]
        for directive in ("hash ", "ip_hash", "least_conn", "random"):
            assert not any(line.startswith(directive) for line in lines), (directive, body)
        # nginx requires keepalive after the balancer.
        keepalive = [line.split()[0] for line in lines[2:]]
        assert keepalive == ["keepalive", "keepalive_requests", "keepalive_timeout"], body
        assert lines[2] == "keepalive 32;"


@pytest.mark.parametrize(("frontend", "backend"), COMBOS)
def test_the_init_block_carries_each_pools_method(rendered, frontend, backend):
    conf_dir = rendered / combo(frontend, backend)
    assert pool_methods(conf_dir) == {"frontend": frontend, "backend": backend}
    init = init_block(conf_dir)
    assert 'require("tenfold.members").init(' in init
    assert 'state_file = "/var/lib/tenfold-lb/members.json"' in init
    assert balancer_setting(conf_dir, "cookie") == '"tenfold_route"'
    assert balancer_setting(conf_dir, "max_fails") == "3"
    assert balancer_setting(conf_dir, "tries") == "3"
    assert re.search(r'^\s*frontend = \{ method = "\w+", seed = "remote_addr" \},$', init, re.M)


def test_fail_timeout_reaches_the_balancer_in_seconds(rendered):
    assert balancer_setting(rendered / "hash-least-conn", "fail_timeout") == "10"
    assert balancer_setting(rendered / "ip-hash-hash", "fail_timeout") == "90"  # 1m30s


def test_members_given_to_the_role_are_not_rendered(rendered):
    with_members, without = rendered / "with-members", rendered / "hash-least-conn"
    for name in ("nginx.conf", "upstreams.conf"):
        assert (with_members / name).read_text() == (without / name).read_text(), name
    for path in with_members.rglob("*"):
        if path.is_file():
            assert "rendertest-frontend-1" not in path.read_text(errors="replace"), path
            assert "18101" not in path.read_text(errors="replace"), path


def test_the_lua_modules_and_shared_dicts_are_in_place(rendered):
    conf_dir = rendered / "hash-least-conn"
    for name in LUA_FILES:
        source = COLLECTION / "roles" / "nginx_lb" / "files" / "lua" / "tenfold" / name
        assert (conf_dir / "lua" / "tenfold" / name).read_text() == source.read_text()
    text = (conf_dir / "nginx.conf").read_text()
    assert text.index("load_module /usr/lib/nginx/modules/ndk_http_module.so;") < text.index(
        "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
    )
    assert 'lua_package_path "/etc/tenfold-nginx/lua/?.lua;;";' in text
    for zone in ("tenfold_members", "tenfold_balancer", "tenfold_stats"):
        assert re.search(rf"^\s*lua_shared_dict {zone} \d+[km];$", text, re.M), zone


def test_the_status_server_serves_the_members_api_and_the_counters(rendered):
    text = (rendered / "hash-least-conn" / "nginx.conf").read_text()
    status = text[text.index("listen 127.0.0.1:8081;") :]
    assert 'require("tenfold.api").members()' in status
    assert "location = /status {" in status and 'require("tenfold.api").status()' in status
    assert "location = /metrics {" in status and 'require("tenfold.api").metrics()' in status


@pytest.mark.parametrize(("frontend", "backend"), COMBOS)
def test_only_the_hash_frontend_sets_the_route_cookie(rendered, frontend, backend):
    cookie = 'header_filter_by_lua_block { require("tenfold.balancer").route_cookie("frontend") }'
    conf_dir = rendered / combo(frontend, backend)
    text = (conf_dir / "nginx.conf").read_text()
    assert (cookie in text) == (frontend == "hash")
    assert ("route_cookie" in text) == (frontend == "hash")
    # No cookie maps any more: the balancer reads the cookie and names the member itself.
    for name in ("nginx.conf", "upstreams.conf"):
        text = (conf_dir / name).read_text()
        assert "map $cookie_" not in text and "Set-Cookie" not in text, name


def test_every_location_that_adds_headers_includes_the_security_headers(rendered):
    text = (rendered / "hash-least-conn" / "nginx.conf").read_text()
    for block in re.findall(r"location [^{]*\{(.*?)\n        \}", text, re.S):
        if "add_header" in block or "expires" in block:
            assert "security_headers.conf" in block, block


def test_a_value_nginx_rejects_fails_with_nginxs_own_message(rendered, tmp_path):
    # A word of the cipher form that OpenSSL does not know: only nginx -t can tell.
    case = {"name": "broken", "members": members(3)}
    extra = {"nginx_lb_ssl_ciphers": ["NO-SUCH-CIPHER"], "render_tls_dir": str(rendered / "tls")}
    run = render(tmp_path, [case], "-e", json.dumps(extra))
    assert run.rc != 0
    assert "nginx: [emerg] SSL_CTX_set_cipher_list" in run.output, run.output[-3000:]
    assert "configuration file /etc/tenfold-nginx/nginx.conf test failed" in run.output


def test_an_unknown_balancing_method_fails_before_anything_is_rendered(tmp_path):
    case = {"name": "unknown-method", "frontend_method": "random"}
    run = render(tmp_path, [case], "-e", json.dumps({"render_tls_dir": str(tmp_path)}))
    assert run.rc != 0
    assert "nginx_lb_frontend_method" in run.output, run.output[-3000:]
    assert not (tmp_path / "unknown-method").exists()


def test_the_redirect_goes_to_the_configured_host(rendered):
    # The defaults: server name localhost, HTTPS on 443.
    conf = (rendered / "hash-least-conn" / "nginx.conf").read_text()
    assert "return 301 https://localhost$request_uri;" in conf


# The issue's own attempt (a value that closes the upstream block and adds a server), and one per kind of
# string, all in one run (the role's check names every bad variable at once): each refused, naming the
# variable, before a file is rendered. tests/unit/test_checks.py tries every injection on every variable.
INJECTED = "10s; } server { listen 127.0.0.1:18888; return 200 injected; } upstream x {"
INJECTIONS = {
    "nginx_lb_upstream_fail_timeout": INJECTED,
    "nginx_lb_redirect_host": "x; } server { listen 18888; return 200 i; }",
    "nginx_lb_proxy_read_timeout": "60s\n",
    "nginx_lb_server_name": "example.com; include /etc/passwd",
    "nginx_lb_content_security_policy": "default-src 'self'\" always; add_header X-Evil \"1",
    "nginx_lb_client_max_body_size": "10m;client_body_temp_path /tmp",
    "nginx_lb_ssl_ciphers": ["AES128-SHA", "HIGH; ssl_protocols SSLv3"],
}


def test_injected_values_fail_the_roles_check_naming_each_before_anything_is_rendered(tmp_path):
    extra = {**INJECTIONS, "render_tls_dir": str(tmp_path)}
    run = render(tmp_path, [{"name": "injected"}], "-e", json.dumps(extra))
    assert run.rc != 0
    for variable in INJECTIONS:
        assert re.search(rf"(every entry of )?{variable} must be ", run.output), (
            variable,
            run.output[-3000:],
        )
    assert not (tmp_path / "injected").exists()
