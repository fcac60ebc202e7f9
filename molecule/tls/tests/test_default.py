"""The tls role: a self-signed pair kept across runs, the user's own pair installed, bad input refused."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

ROOT = Path(__file__).resolve().parents[3]
SELF_SIGNED = "/etc/tenfold/moltls/tls"
USER = "/etc/tenfold/moltls/tls-user"
USER_SRC = "/etc/tenfold/moltls/user-src"


def public_key_of(host, kind: str, path: str) -> str:
    command = (
        f"openssl x509 -in {path} -noout -pubkey" if kind == "cert" else f"openssl pkey -in {path} -pubout"
    )
    return host.check_output(command)


@pytest.mark.parametrize("tls_dir", [SELF_SIGNED, USER])
def test_certificate_is_world_readable_and_key_is_root_only(host, tls_dir):
    certificate = host.file(f"{tls_dir}/fullchain.pem")
    key = host.file(f"{tls_dir}/privkey.pem")
    assert certificate.is_file and certificate.mode == 0o644 and certificate.user == "root"
    assert key.is_file and key.mode == 0o600 and key.user == "root" and key.group == "root"


@pytest.mark.parametrize("tls_dir", [SELF_SIGNED, USER])
def test_certificate_and_key_belong_together(host, tls_dir):
    assert public_key_of(host, "cert", f"{tls_dir}/fullchain.pem") == public_key_of(
        host, "key", f"{tls_dir}/privkey.pem"
    )


def test_self_signed_certificate_names_localhost_and_serves_tls(host):
    text = host.check_output(f"openssl x509 -in {SELF_SIGNED}/fullchain.pem -noout -text")
    assert "Subject: CN = localhost" in text
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    assert "Public-Key: (2048 bit)" in text


def test_self_signed_certificate_passes_the_web_pki_profile_once_trusted(host):
    # What a Web PKI verifier (cryptography's, so sslyze's) requires of a leaf besides trust: key
    # identifiers, the server name, serverAuth. The certificate is its own trust anchor here.
    pem = host.file(f"{SELF_SIGNED}/fullchain.pem").content
    [certificate] = x509.load_pem_x509_certificates(pem)
    ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(Store([certificate])).build_server_verifier(name)
        assert verifier.verify(certificate, []) == [certificate]


def test_user_material_is_installed_as_given(host):
    for name in ("fullchain.pem", "privkey.pem"):
        assert host.run(f"cmp {USER_SRC}/{name} {USER}/{name}").rc == 0
    assert "CN = user.example" in host.check_output(f"openssl x509 -in {USER}/fullchain.pem -noout -subject")


def run_bad_input(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            str(Path(__file__).parents[1] / "bad_input.yml"),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_missing_certificate_path_fails_clearly_before_anything_is_written(host):
    run = run_bad_input(
        "-e",
        "tls_certificate_src=/nonexistent/fullchain.pem",
        "-e",
        f"tls_private_key_src={USER_SRC}/privkey.pem",
    )
    assert run.returncode != 0
    assert "tls_certificate_src=/nonexistent/fullchain.pem does not exist" in run.stdout
    assert not host.file("/etc/tenfold/moltls-bad").exists


def test_certificate_with_a_foreign_key_fails_clearly_before_anything_is_written(host):
    run = run_bad_input(
        "-e",
        f"tls_certificate_src={USER_SRC}/fullchain.pem",
        "-e",
        f"tls_private_key_src={SELF_SIGNED}/privkey.pem",
    )
    assert run.returncode != 0
    assert "does not match the private key" in run.stdout
    assert not host.file("/etc/tenfold/moltls-bad").exists


def test_certificate_without_its_key_is_refused(host):
    run = run_bad_input("-e", f"tls_certificate_src={USER_SRC}/fullchain.pem")
    assert run.returncode != 0
    assert "set both tls_certificate_src and tls_private_key_src" in run.stdout
    assert not host.file("/etc/tenfold/moltls-bad").exists
