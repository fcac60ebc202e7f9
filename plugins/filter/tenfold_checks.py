# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Filters the roles' validation tasks use for what a regular expression cannot check: IP addresses and
networks, and the user's certificate and private key (read on the controller, before anything changes)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
PEM_PRIVATE_KEY = b"PRIVATE KEY-----"


def tenfold_not_ip(values: Iterable[Any] | str, networks: bool = False) -> list[str]:
    """The entries that are not IP addresses (with networks=True: nor networks such as 10.0.0.0/8)."""
    items = [values] if isinstance(values, str) else list(values or [])
    bad = []
    for item in items:
        text = str(item).strip()
        try:
            if networks and "/" in text:
                ipaddress.ip_network(text, strict=False)
            else:
                ipaddress.ip_address(text)
        except ValueError:
            bad.append(str(item))
    return bad


def _read(path: str, what: str, problems: list[str]) -> bytes | None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        problems.append(f"{what} {path} cannot be read: {exc.strerror or exc}")
        return None
    if not data.strip():
        problems.append(f"{what} {path} is empty")
        return None
    return data


def _certificate(path: str, problems: list[str], now: datetime) -> x509.Certificate | None:
    data = _read(path, "the certificate", problems)
    if data is None:
        return None
    if PEM_CERTIFICATE not in data:
        hint = " (it holds a private key: are the two files swapped?)" if PEM_PRIVATE_KEY in data else ""
        problems.append(
            f"the certificate {path} is not a PEM certificate: it has no '-----BEGIN CERTIFICATE-----' "
            f"block{hint}; nginx needs the PEM chain, server certificate first"
        )
        return None
    try:
        certificate = x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        problems.append(f"the certificate {path} cannot be parsed as a PEM certificate: {exc}")
        return None
    if certificate.not_valid_after_utc < now:
        problems.append(
            f"the certificate {path} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; "
            "renew it"
        )
    elif certificate.not_valid_before_utc > now:
        problems.append(
            f"the certificate {path} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC (is the clock right?)"
        )
    return certificate


def _private_key(path: str, problems: list[str]) -> Any:
    data = _read(path, "the private key", problems)
    if data is None:
        return None
    if PEM_PRIVATE_KEY not in data:
        hint = " (it holds a certificate: are the two files swapped?)" if PEM_CERTIFICATE in data else ""
        problems.append(
            f"the private key {path} is not a PEM private key: it has no '-----BEGIN ... PRIVATE KEY-----' "
            f"block{hint}"
        )
        return None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        problems.append(
            f"the private key {path} is encrypted with a passphrase, which nginx cannot ask for; "
            f"give an unencrypted copy (openssl pkey -in {path} -out privkey.pem) and keep it mode 0600"
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        problems.append(f"the private key {path} cannot be parsed as a PEM private key: {exc}")
    return None


def _public_bytes(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tenfold_tls_problems(certificate_path: str, key_path: str, now: datetime | None = None) -> list[str]:
    """What is wrong with a certificate chain and private key nginx is to serve ([] when nothing is):
    unreadable or empty files, a file that is not PEM (or the two swapped), an expired or not yet valid
    certificate, an encrypted key, and a key that does not belong to the certificate."""
    problems: list[str] = []
    certificate = _certificate(certificate_path, problems, now or datetime.now(UTC))
    key = _private_key(key_path, problems)
    if (
        certificate is not None
        and key is not None
        and _public_bytes(certificate.public_key()) != _public_bytes(key.public_key())
    ):
        problems.append(
            f"the certificate {certificate_path} does not match the private key {key_path} (their public "
            "keys differ); install the key that was used for this certificate"
        )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tenfold_not_ip": tenfold_not_ip, "tenfold_tls_problems": tenfold_tls_problems}
