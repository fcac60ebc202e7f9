"""The LB's edge: TLS versions, the redirect, security headers on every route and on the LB's own error pages.

The scanners' verdicts on TLS are in test_tls_scan.py; rate and connection limits in test_abuse.py.
"""

from __future__ import annotations

import socket
import ssl

import pytest
from helpers import Client, assert_lb_error_page, assert_security_headers

pytestmark = pytest.mark.integration


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
    assert response.headers["location"] == f"https://localhost:{stack.https_port}/some/page?x=1"
    assert_security_headers(response)


def test_the_redirect_names_the_configured_host_never_the_clients(stack):
    response = stack.plain_client().get("/login", headers={"Host": "evil.example"})
    assert response.status == 301
    assert response.headers["location"] == f"https://localhost:{stack.https_port}/login"


# One path per location of the HTTPS server (the static-extension one too), and an app's own 404s.
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/whoami",
        "/api/whoami",
        "/health",
        "/static/app.css",
        "/img/logo.png",
        "/no-such-page",
        "/api/nope",
    ],
)
def test_security_headers_on_every_route(stack, path):
    response = stack.client(source="127.0.0.10").get(path)
    assert response.status in (200, 404)
    assert_security_headers(response)


@pytest.mark.parametrize("path", ["/nginx_status", "/health", "/elsewhere"])
def test_security_headers_on_the_status_listener(stack, path):
    response = Client(stack.status_port, tls=False).get(path)
    assert response.status in (200, 404)
    assert_security_headers(response)


def test_lb_own_404_is_its_error_page_with_headers(stack):
    # The error pages' location is internal: asked for directly, nginx itself answers 404 (with that page).
    response = stack.client(source="127.0.0.10").get("/_tenfold_errors/413.html")
    assert_lb_error_page(response, 404, "Not Found")


def test_static_assets_are_gzipped_and_cacheable_and_dynamic_responses_are_not_compressed(stack):
    client = stack.client(source="127.0.0.10")
    gzip = {"Accept-Encoding": "gzip"}
    for path in ("/static/app.css", "/static/app.js"):
        response = client.get(path, headers=gzip)
        assert response.status == 200
        assert response.headers.get("content-encoding") == "gzip", (path, response.headers)
        assert "max-age" in response.headers.get("cache-control", "")
    # Pages and API answers may hold a secret next to reflected input: never compressed (BREACH).
    for path in ("/", "/whoami", "/api/whoami"):
        response = client.get(path, headers=gzip)
        assert response.status == 200 and "content-encoding" not in response.headers, (path, response.headers)
