"""The nginx_lb role on stack mollb: the hardened LB container, its routes, TLS, headers, status and log.

Changes go through nginx -t: a rejected config never reaches the running LB, an accepted one reloads it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CONVERGE = Path(__file__).resolve().parents[1] / "converge.yml"
NAME = "mollb-lb"
HTTP, HTTPS, STATUS = 38180, 38543, 38181
LIVE = Path("/etc/tenfold/mollb/nginx")
LOGS = Path("/var/log/tenfold/mollb")
STATE = Path("/var/lib/tenfold/mollb/lb")
# converge.yml's members: one per pool, at 127.0.0.1:9 where nothing listens.
MEMBERS = {pool: [(f"mollb-{pool}-1", "127.0.0.1", 9, "active")] for pool in ("frontend", "backend")}
FIELDS = ("id", "address", "port", "state")
SECURITY_HEADERS = {
    "strict-transport-security",
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
}


def request(port: int, path: str, tls: bool = True, method: str = "GET", body: bytes | None = None):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def inspect(host) -> dict:
    return json.loads(host.check_output(f"docker inspect {NAME}"))[0]


def converge(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), str(CONVERGE), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def recap_changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"\bchanged=(\d+)", output))


def live_config() -> dict[str, bytes]:
    return {str(p.relative_to(LIVE)): p.read_bytes() for p in sorted(LIVE.rglob("*")) if p.is_file()}


def master_and_workers(host) -> tuple[str, set[str]]:
    master = host.check_output(f"docker inspect -f '{{{{.State.Pid}}}}' {NAME}")
    workers = set(host.check_output(f"pgrep -P {master}").split())
    return master, workers


def test_container_runs_hardened_on_the_host_network(host):
    info = inspect(host)
    config = info["HostConfig"]
    assert info["State"]["Running"] is True
    assert config["NetworkMode"] == "host"
    assert config["RestartPolicy"]["Name"] == "unless-stopped"
    assert config["CapDrop"] == ["ALL"]
    # Ports above 1024 here, so NET_BIND_SERVICE is not needed.
    assert sorted(config["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"]
    assert "no-new-privileges:true" in config["SecurityOpt"]
    assert info["Config"]["Labels"]["tenfold.stack"] == "mollb"
    assert info["Config"]["Healthcheck"]["Test"][0] == "CMD"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/etc/tenfold-nginx"]["Source"] == str(LIVE) and mounts["/etc/tenfold-nginx"]["RW"] is False
    assert mounts["/etc/tenfold-tls"]["RW"] is False
    assert (
        mounts["/var/log/tenfold-nginx"]["Source"] == str(LOGS)
        and mounts["/var/log/tenfold-nginx"]["RW"] is True
    )
    assert mounts["/var/lib/tenfold-lb"]["Source"] == str(STATE)
    assert mounts["/var/lib/tenfold-lb"]["RW"] is True


def test_container_becomes_healthy(host):
    for _ in range(40):
        if inspect(host)["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    pytest.fail(f"{NAME} never became healthy: {inspect(host)['State'].get('Health')}")


def test_lb_answers_its_own_health_with_security_headers(host):
    status, headers, body = request(HTTPS, "/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    assert set(headers) >= SECURITY_HEADERS
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert int(headers["strict-transport-security"].split("max-age=")[1].split(";")[0]) >= 31536000
    assert headers["server"] == "nginx"


def test_plain_http_redirects_to_https(host):
    status, headers, _ = request(HTTP, "/some/page?x=1", tls=False)
    assert status == 301
    assert headers["location"] == f"https://localhost:{HTTPS}/some/page?x=1"
    assert set(headers) >= SECURITY_HEADERS


@pytest.mark.parametrize("path", ["/", "/api/whoami", "/static/app.css"])
def test_unreachable_pools_get_the_lbs_502_page_with_security_headers(host, path):
    status, headers, body = request(HTTPS, path)
    assert status == 502
    assert b"<h1>502 Bad Gateway</h1>" in body
    assert set(headers) >= SECURITY_HEADERS


def test_oversized_body_gets_the_lbs_413_page(host):
    status, headers, body = request(HTTPS, "/upload", method="POST", body=b"x" * (11 * 1024 * 1024))
    assert status == 413
    assert b"413 Request Entity Too Large" in body
    assert set(headers) >= SECURITY_HEADERS


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_are_served(host, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", HTTPS), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        assert tls.version() == version.name.replace("v1_", "v1.")


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_10_and_11_are_refused(host, flag):
    result = host.run(
        f"openssl s_client -connect 127.0.0.1:{HTTPS} {flag} -cipher 'ALL:@SECLEVEL=0' </dev/null"
    )
    assert result.rc != 0
    assert "alert protocol version" in result.stderr + result.stdout


def test_dhe_suite_uses_the_rfc7919_group(host):
    result = host.run(
        f"openssl s_client -connect 127.0.0.1:{HTTPS} -tls1_2 -cipher DHE-RSA-AES256-GCM-SHA384 </dev/null"
    )
    assert result.rc == 0
    assert "Server Temp Key: DH, 2048 bits" in result.stdout


def test_stub_status_answers_on_the_local_listener(host):
    status, _, body = request(STATUS, "/nginx_status", tls=False)
    assert status == 200
    assert b"Active connections" in body


def test_access_log_is_json_with_pool_and_upstream_fields(host):
    marker = f"/api/whoami?marker={time.time_ns()}"
    request(HTTPS, marker)
    for _ in range(30):
        log = LOGS / "access.json.log"
        entries = (
            [json.loads(line) for line in log.read_text().splitlines() if marker in line]
            if log.exists()
            else []
        )
        if entries:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the request never reached the access log")
    entry = entries[-1]
    assert entry["remote_addr"] == "127.0.0.1"
    assert entry["pool"] == "backend"
    assert entry["status"] == 502
    assert entry["upstream_addr"].startswith("127.0.0.1:9")
    for field in (
        "time",
        "msec",
        "request_method",
        "request_uri",
        "body_bytes_sent",
        "request_time",
        "upstream_status",
        "upstream_response_time",
        "upstream_connect_time",
        "request_id",
    ):
        assert field in entry


def test_private_key_is_root_only(host):
    key = host.file("/etc/tenfold/mollb/tls/privkey.pem")
    assert key.mode == 0o600 and key.user == "root"


def test_check_mode_on_the_converged_host_reports_no_changes(host):
    run = converge("--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:]
    assert recap_changed(run.stdout) == 0, run.stdout[-3000:]


def test_config_nginx_rejects_never_reaches_the_running_lb(host):
    before, started = live_config(), inspect(host)["State"]["StartedAt"]
    # A cipher of the right form that OpenSSL does not know: only nginx -t can tell.
    run = converge("-e", '{"nginx_lb_ssl_ciphers": ["NO-SUCH-CIPHER"]}')
    assert run.returncode != 0
    assert "nginx: [emerg] SSL_CTX_set_cipher_list" in run.stdout, run.stdout[-3000:]
    assert live_config() == before
    assert inspect(host)["State"]["StartedAt"] == started
    assert request(HTTPS, "/health")[0] == 200


def test_accepted_change_reloads_nginx_without_restarting_it(host):
    started = inspect(host)["State"]["StartedAt"]
    master, workers = master_and_workers(host)
    run = converge("-e", "nginx_lb_rate_general=11")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "RUNNING HANDLER [tenfold.stack.nginx_lb : Reload nginx" in run.stdout
    assert "rate=11r/s" in (LIVE / "nginx.conf").read_text()
    assert inspect(host)["State"]["StartedAt"] == started
    for _ in range(50):
        new_master, new_workers = master_and_workers(host)
        if new_workers and not new_workers & workers:
            break
        time.sleep(0.1)
    assert new_master == master
    assert new_workers and not new_workers & workers
    # The LB keeps rate 11 for the tests after this one (none depends on it); molecule's idempotence step
    # and tests/integration/test_lb_update.py show that a second run changes nothing.


def listed_members() -> dict[str, list[tuple]]:
    status, headers, body = request(STATUS, "/members", tls=False)
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    pools = json.loads(body)["pools"]
    return {pool: [tuple(m[k] for k in FIELDS) for m in shown["members"]] for pool, shown in pools.items()}


def test_the_members_api_lists_the_converged_members(host):
    assert listed_members() == MEMBERS
    status, _, body = request(STATUS, "/members/backend", tls=False)
    assert status == 200
    pool = json.loads(body)
    assert pool["pool"] == "backend" and pool["generation"] >= 1
    assert [(m["id"], m["inflight"]) for m in pool["members"]] == [("mollb-backend-1", 0)]
    status, _, body = request(STATUS, "/members/nope", tls=False)
    assert status == 404 and b"no pool nope" in body


def test_the_state_file_holds_the_members(host):
    state = host.file(str(STATE))
    assert state.is_directory and state.user == "www-data" and state.mode == 0o750
    saved = json.loads(host.file(str(STATE / "members.json")).content_string)
    held = {pool: [tuple(m[k] for k in FIELDS) for m in s["members"]] for pool, s in saved["pools"].items()}
    assert held == MEMBERS
    _, _, body = request(STATUS, "/members", tls=False)
    for pool, shown in json.loads(body)["pools"].items():
        assert saved["pools"][pool]["generation"] == shown["generation"]


def test_metrics_answer_prometheus_text(host):
    request(HTTPS, "/api/whoami")  # a request a member "answered" (the LB's 502 after the failed try)
    status, headers, body = request(STATUS, "/metrics", tls=False)
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# TYPE tenfold_lb_requests_total counter" in text
    assert 'tenfold_lb_members{pool="backend",state="active"} 1' in text
    assert 'tenfold_lb_members{pool="frontend",state="active"} 1' in text
    for line in text.splitlines():
        assert line.startswith("# ") or re.match(r"^[a-z_]+(\{[^}]*\})? \S+$", line), line


def test_the_control_server_refuses_a_bad_write_and_keeps_the_members(host):
    status, _, body = request(STATUS, "/members/backend", tls=False, method="PUT", body=b'{"generation": 0}')
    assert status == 400 and b"members: must be a list" in body, body
    assert listed_members() == MEMBERS


def test_a_restarted_lb_starts_from_the_state_file(host):
    host.check_output(f"docker restart {NAME}")
    for _ in range(50):
        try:
            if request(STATUS, "/nginx_status", tls=False)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert listed_members() == MEMBERS


def test_the_per_address_connection_bound_is_in_the_kernel_for_the_lbs_ports():
    table = subprocess.run(
        ["nft", "list", "table", "inet", "tenfold_mollb_lb"], capture_output=True, text=True
    )
    assert table.returncode == 0, table.stderr
    assert f"tcp dport {{ {HTTP}, {HTTPS} }} ct state new" in table.stdout
    assert "ip saddr ct count over 100" in table.stdout


def test_a_unit_loads_the_bound_at_boot_and_is_a_valid_one():
    unit = Path("/etc/systemd/system/tenfold-lb-limits-mollb.service")
    text = unit.read_text()
    assert "ExecStart=/usr/sbin/nft -f /etc/tenfold/mollb/lb-limits.nft" in text
    assert "WantedBy=multi-user.target" in text
    check = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert check.returncode == 0 and check.stderr == "", check.stderr


LOGROTATE = Path("/etc/logrotate.d/tenfold-mollb-lb")


def logged(marker: str, log: Path) -> bool:
    """Whether a request with `marker` reached `log` (the access log is flushed at least every second)."""
    for _ in range(30):
        if log.exists() and marker in log.read_text():
            return True
        time.sleep(0.2)
    return False


def test_logrotate_has_a_config_for_the_lbs_logs_that_it_accepts():
    text = LOGROTATE.read_text()
    assert f"{LOGS}/access.json.log {LOGS}/error.log {{" in text
    for directive in ("daily", "rotate 14", "missingok", "notifempty", "compress", "delaycompress"):
        assert f"\n    {directive}\n" in text
    assert f"docker exec {NAME} nginx -s reopen" in text
    check = subprocess.run(["logrotate", "-d", str(LOGROTATE)], capture_output=True, text=True)
    # logrotate prefixes what it refuses with "error:" (the config names error.log, so not just "error").
    assert check.returncode == 0 and "error:" not in check.stderr, check.stderr
    assert "Handling 1 logs" in check.stderr + check.stdout


def test_a_forced_rotation_leaves_nginx_writing_to_a_fresh_access_log(tmp_path):
    log = LOGS / "access.json.log"
    before = f"/api/whoami?before-rotation={time.time_ns()}"
    request(HTTPS, before)
    assert logged(before, log)
    # A state file of the test's own: the host's /var/lib/logrotate/status is not touched.
    run = subprocess.run(
        ["logrotate", "--force", "--state", str(tmp_path / "status"), str(LOGROTATE)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    rotated = LOGS / "access.json.log.1"
    assert before in rotated.read_text()
    after = f"/api/whoami?after-rotation={time.time_ns()}"
    request(HTTPS, after)
    assert logged(after, log), "nginx did not reopen its access log after the rotation"
    assert before not in log.read_text()
    assert after not in rotated.read_text()
