"""The validation filters: IP addresses and networks, and the user's certificate and private key."""

from __future__ import annotations

from datetime import UTC, datetime

import pki
import pytest
from tenfold_checks import tenfold_not_ip, tenfold_tls_problems

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_addresses_and_networks_pass_and_anything_else_is_returned():
    assert tenfold_not_ip(["127.0.0.1", "::1", "10.1.2.3"]) == []
    assert tenfold_not_ip(["999.1.1.1", "localhost", "", "127.0.0.1:80"]) == [
        "999.1.1.1",
        "localhost",
        "",
        "127.0.0.1:80",
    ]
    assert tenfold_not_ip("10.0.0.0/8") == ["10.0.0.0/8"]
    assert tenfold_not_ip(["10.0.0.0/8", "127.0.3.1/24", "fd00::/8", "127.0.0.9"], networks=True) == []
    assert tenfold_not_ip(["10.0.0.0/99", "everyone", "10.0.0.0/"], networks=True) == [
        "10.0.0.0/99",
        "everyone",
        "10.0.0.0/",
    ]
    assert tenfold_not_ip([]) == [] and tenfold_not_ip(None) == []


def pem_pair(tmp_path, name="a", days=(-1, 30), password=None) -> tuple[str, str]:
    cert, key = pki.pem_pair(tmp_path, name, days, password, now=NOW)
    return str(cert), str(key)


def test_a_valid_pair_has_no_problem(tmp_path):
    assert tenfold_tls_problems(*pem_pair(tmp_path), now=NOW) == []


def test_a_key_of_another_certificate_is_named(tmp_path):
    cert, _ = pem_pair(tmp_path, "a")
    _, other = pem_pair(tmp_path, "b")
    [problem] = tenfold_tls_problems(cert, other, now=NOW)
    assert f"the certificate {cert} does not match the private key {other}" in problem


@pytest.mark.parametrize(
    ("days", "message"),
    [((-60, -1), "expired on 2026-05-31"), ((2, 30), "is not valid before 2026-06-03")],
)
def test_a_certificate_outside_its_validity_is_refused(tmp_path, days, message):
    [problem] = tenfold_tls_problems(*pem_pair(tmp_path, days=days), now=NOW)
    assert message in problem


def test_an_encrypted_key_is_refused_with_what_to_do(tmp_path):
    cert, key = pem_pair(tmp_path, password=b"secret")
    [problem] = tenfold_tls_problems(cert, key, now=NOW)
    assert f"the private key {key} is encrypted" in problem and "openssl pkey" in problem


def test_empty_missing_and_non_pem_files_are_named(tmp_path):
    cert, key = pem_pair(tmp_path)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"\n")
    text = tmp_path / "text.pem"
    text.write_text("not a certificate\n")
    assert tenfold_tls_problems(str(empty), key, now=NOW) == [f"the certificate {empty} is empty"]
    assert tenfold_tls_problems(cert, str(empty), now=NOW) == [f"the private key {empty} is empty"]
    [problem] = tenfold_tls_problems(str(text), key, now=NOW)
    assert f"the certificate {text} is not a PEM certificate" in problem
    [problem] = tenfold_tls_problems(cert, str(text), now=NOW)
    assert f"the private key {text} is not a PEM private key" in problem
    [problem] = tenfold_tls_problems(str(tmp_path / "gone.pem"), key, now=NOW)
    assert "cannot be read" in problem


def test_swapped_files_say_so(tmp_path):
    cert, key = pem_pair(tmp_path)
    problems = tenfold_tls_problems(key, cert, now=NOW)
    assert len(problems) == 2 and all("are the two files swapped?" in p for p in problems)


def test_a_corrupt_pem_block_is_named(tmp_path):
    _, key = pem_pair(tmp_path)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    [problem] = tenfold_tls_problems(str(broken), key, now=NOW)
    assert f"the certificate {broken} cannot be parsed" in problem
