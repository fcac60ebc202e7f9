"""The LB's edge: TLS versions, the redirect, security headers on every response, rate and conn limits."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

pytestmark = pytest.mark.integration

SECURITY_HEADERS = (
    "strict-transport-security",
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
)


def assert_security_headers(response):
    missing = [h for h in SECURITY_HEADERS if h not in response.headers]
    assert not missing, f"status {response.status}: missing {missing}"
    max_age = int(response.headers["strict-transport-security"].split("max-age=")[1].split(";")[0])
    assert max_age >= 31536000
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "nginx/" not in response.headers.get("server", "")


def handshake(port: int, version: ssl.TLSVersion) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        return tls.version()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_are_accepted(stack, version):
    assert handshake(stack.https_port, version) == version.name.replace("v1_", "v1.")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused_by_the_server(stack, version):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack.https_port, version)
    # The server's own refusal (a protocol_version alert), not a client that never tried.
    assert "PROTOCOL_VERSION" in str(refused.value).upper()


def test_http_redirects_to_https_with_headers(stack):
    response = stack.plain_client().get("/some/page?x=1")
    assert response.status == 301
    assert response.headers["location"] == f"https://127.0.0.1:{stack.https_port}/some/page?x=1"


@pytest.mark.parametrize(
    "path", ["/", "/whoami", "/api/whoami", "/health", "/static/app.css", "/no-such-page"]
)
def test_security_headers_on_every_route(stack, path):
    response = stack.client(source="127.0.0.10").get(path)
    assert response.status in (200, 404)
    assert_security_headers(response)


def test_static_assets_are_gzipped_and_cacheable(stack):
    client = stack.client(source="127.0.0.10")
    response = client.get("/static/app.css")
    assert response.status == 200
    assert "max-age" in response.headers.get("cache-control", "")


def test_flooding_address_gets_429_with_headers_while_another_is_unaffected(stack):
    flooder = stack.client(source="127.0.0.2")
    statuses = [flooder.get("/api/whoami") for _ in range(60)]
    limited = [r for r in statuses if r.status == 429]
    assert limited, "60 back-to-back requests from one address were never limited"
    assert all(r.status in (200, 429) for r in statuses)
    assert_security_headers(limited[0])
    bystander = stack.client(source="127.0.0.3")
    assert [bystander.get("/api/whoami").status for _ in range(5)] == [200] * 5


def test_allowlisted_address_is_not_limited(stack):
    trusted = stack.client(source="127.0.0.9")
    assert {trusted.get("/api/whoami").status for _ in range(60)} == {200}


def test_eleventh_concurrent_connection_from_one_address_is_refused(stack):
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(11)

    def slow_request():
        client = stack.client(source="127.0.0.4")
        start.wait()
        status = client.get("/api/work?ms=2000").status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=slow_request) for _ in range(11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] * 10 + [429]
