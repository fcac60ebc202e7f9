# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Filters the roles' validation tasks use: the strict form of every string that reaches nginx's config or a
container, IP addresses and networks, and the user's certificate and private key (read on the controller,
before anything changes)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
except ImportError as exc:  # the other filters work without it; tls_problems says what is missing
    CRYPTOGRAPHY_ERROR: ImportError | None = exc
else:
    CRYPTOGRAPHY_ERROR = None

# Each form: the whole value must match (re.fullmatch: no trailing newline slips through), and what to say.
# None of them admits whitespace, quotes, ';', '{', '}', '$' or '#', so no value can end an nginx directive.
FORMS = {
    "time": (r"([0-9]{1,9}(ms|y|M|w|d|h|m|s)){1,8}|[0-9]{1,9}", "an nginx time such as 10s, 500ms or 1m30s"),
    "size": (r"[0-9]{1,9}[kKmMgG]?", "a size such as 64k, 10m or 1g"),
    "word": (r"[A-Za-z0-9][A-Za-z0-9_.+/-]{0,127}", "a word of letters, digits and _ . + / -"),
    "name": (r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", "a name of letters, digits and _ . -"),
    "memory": (r"[0-9]{1,9}(\.[0-9]{1,3})?[bkmgBKMG]?", "a memory size such as 512m or 1g"),
    # logrotate's units: k or K, M, G (it refuses m and g).
    "logsize": (r"[0-9]{1,12}[kKMG]?", "a logrotate size such as 512k, 100M or 1G"),
    "cookie": (r"[A-Za-z0-9_]{1,64}", "a cookie name of letters, digits and _ (it becomes $cookie_<name>)"),
    "extension": (r"[A-Za-z0-9]{1,16}", "a file extension of letters and digits"),
    "path": (r"/[A-Za-z0-9_.+/-]{0,1023}", "an absolute path of letters, digits and _ . + / -"),
    "host": (
        r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?",
        "a host name or IPv4 address (letters, digits, . and -)",
    ),
    "address": (
        r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45}",
        "an IP address or a host name",
    ),
    "line": (r"[^\x00-\x1f\x7f]{1,4096}", "one line of at most 4096 characters"),
    "tag": (r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "a Docker tag such as local"),
    "hosts": (r"[A-Za-z0-9*.:_-]{1,253}( [A-Za-z0-9*.:_-]{1,253}){0,31}", "space-separated host names"),
    "image": (
        r"(?=.{1,255}\Z)[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
        r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?",
        "an image reference (name[:tag][@digest]) such as tenfold/backend:local",
    ),
    "header": (
        r"[^\x00-\x1f\x7f\"\\$]{0,1024}",
        "a header value without double quotes, backslashes, $ or control characters",
    ),
}
# An environment (form "env"): a dict of names of letters, digits and _ to values without control characters.
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
ENV_VALUE = r"[^\x00-\x1f\x7f]{0,4096}"
ENV = (
    "a dict of environment variable names (letters, digits, _) to values of at most 4096 characters without"
    " control characters"
)


def bad_forms(forms: dict[str, str], values: list[Any]) -> list[str]:
    """For each variable of `forms` ({name: form}) whose value (in `values`, in the same order) is not of its
    form, a message naming it and the values at fault. A form ending in "?" also accepts ""; a list is
    checked item by item."""
    problems = []
    for (name, form), value in zip(forms.items(), values, strict=True):
        if form == "env":
            entries = value.items() if isinstance(value, dict) else [("", value)]
            bad = [f"{k}={v}" for k, v in entries if not (_matches(ENV_NAME, k) and _matches(ENV_VALUE, v))]
            subject = f"{name} must be {ENV}"
        else:
            optional, form = form.endswith("?"), form.rstrip("?")
            items = value if isinstance(value, list) else [value]
            bad = [v for v in items if not (optional and v == "") and not _matches(FORMS[form][0], v)]
            subject = f"{'every entry of ' if isinstance(value, list) else ''}{name} must be {FORMS[form][1]}"
            subject += ' (or "")' if optional else ""
        if bad:
            problems.append(f"{subject}; not {', '.join(repr(v) for v in bad)}"[:2000])
    return problems


def _matches(pattern: str, value: Any) -> bool:
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    return scalar and re.fullmatch(pattern, str(value)) is not None


PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
PEM_PRIVATE_KEY = b"PRIVATE KEY-----"


def not_ip(values: Iterable[Any] | str, networks: bool = False) -> list[str]:
    """The entries that are not IP addresses (with networks=True: nor networks such as 10.0.0.0/8)."""
    items = [values] if isinstance(values, str) else list(values or [])
    bad = []
    for item in items:
        text = str(item)
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


def tls_problems(certificate_path: str, key_path: str, now: datetime | None = None) -> list[str]:
    """What is wrong with a certificate chain and private key nginx is to serve ([] when nothing is):
    unreadable or empty files, a file that is not PEM (or the two swapped), an expired or not yet valid
    certificate, an encrypted key, and a key that does not belong to the certificate."""
    if CRYPTOGRAPHY_ERROR is not None:
        raise AnsibleFilterError(f"tls_problems needs the Python package cryptography: {CRYPTOGRAPHY_ERROR}")
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
        return {
            "bad_forms": bad_forms,
            "not_ip": not_ip,
            "tls_problems": tls_problems,
        }
