"""Two TLS scanners against the LB: sslyze's Mozilla "intermediate" check, testssl.sh's vulnerability checks.

sslyze comes from its own venv (`make sslyze`, requirements-sslyze.txt), testssl.sh from Debian (`make deps`).
A missing scanner fails the test: it never skips.

The certificate is the tls role's self-signed one. The Mozilla check requires a certificate path that
validates against some trust store, so sslyze is given the stack's own certificate as its CA file: a client
told to trust it, as browsers trust a CA-signed one. Everything else about the certificate (key, signature,
lifespan, the Web PKI profile's extensions, the names) is checked as for any certificate. testssl.sh runs
the protocol, cipher, forward-secrecy and vulnerability sections, not the certificate section (-S), whose
trust and revocation findings only say that no CA signed the certificate.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import SSLYZE

pytestmark = pytest.mark.integration

# Findings of these severities fail the scan. WARN and FATAL are testssl.sh's own "could not test": a check
# that did not run proves nothing, so they fail it too.
FAILING_SEVERITIES = {"MEDIUM", "HIGH", "CRITICAL", "WARN", "FATAL"}
# The vulnerability checks of testssl.sh 3.0 (-U): each must have reported.
VULNERABILITY_CHECKS = (
    "heartbleed",
    "CCS",
    "ticketbleed",
    "ROBOT",
    "secure_renego",
    "secure_client_renego",
    "CRIME_TLS",
    "BREACH",
    "POODLE_SSL",
    "fallback_SCSV",
    "SWEET32",
    "FREAK",
    "DROWN",
    "LOGJAM",
    "BEAST",
    "LUCKY13",
    "RC4",
)


def certificate_file(stack) -> Path:
    # tls_dir's default names the stack; the stack's vars file may set another.
    return Path(stack.vars.get("tls_dir", f"/etc/tenfold/{stack.name}/tls")) / "fullchain.pem"


def test_sslyze_finds_the_lb_compliant_with_mozilla_intermediate(stack, figures, tmp_path):
    if not SSLYZE.is_file():
        pytest.fail(f"sslyze is missing at {SSLYZE}: `make sslyze` installs it (requirements-sslyze.txt)")
    report = tmp_path / "sslyze.json"
    command = [
        str(SSLYZE),
        "--quiet",
        "--mozilla_config=intermediate",
        f"--certinfo_ca_file={certificate_file(stack)}",
        f"--json_out={report}",
        f"127.0.0.1:{stack.https_port}",
    ]
    started = time.monotonic()
    scan = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    duration = time.monotonic() - started
    # The compliance verdict is not in the JSON: sslyze prints it, and exits non-zero when not compliant.
    assert scan.returncode == 0 and "OK - Compliant" in scan.stdout, scan.stdout + scan.stderr[-2000:]

    result = json.loads(report.read_text())["server_scan_results"][0]
    assert result["scan_status"] == "COMPLETED", result.get("connectivity_error_trace")
    scans = result["scan_result"]
    [deployment] = scans["certificate_info"]["result"]["certificate_deployments"]
    trusted_by = [
        p["trust_store"]["name"]
        for p in deployment["path_validation_results"]
        if p["verified_certificate_chain"]
    ]
    assert "Supplied CA file" in trusted_by, deployment["path_validation_results"]

    offered = {}
    for field, version in [
        ("ssl_2_0_cipher_suites", "SSL 2.0"),
        ("ssl_3_0_cipher_suites", "SSL 3.0"),
        ("tls_1_0_cipher_suites", "TLS 1.0"),
        ("tls_1_1_cipher_suites", "TLS 1.1"),
        ("tls_1_2_cipher_suites", "TLS 1.2"),
        ("tls_1_3_cipher_suites", "TLS 1.3"),
    ]:
        accepted = scans[field]["result"]["accepted_cipher_suites"]
        if accepted:
            offered[version] = [suite["cipher_suite"]["name"] for suite in accepted]
            # Forward secrecy: every suite the server accepts negotiated an ephemeral key.
            assert all(suite["ephemeral_key"] for suite in accepted), accepted
    assert sorted(offered) == ["TLS 1.2", "TLS 1.3"]
    curves = [curve["name"] for curve in scans["elliptic_curves"]["result"]["supported_curves"]]

    figures.record("TLS", "sslyze scan duration", round(duration, 1), "s")
    figures.record(
        "TLS", "sslyze Mozilla intermediate (5.7)", "compliant", note="certificate trusted via its CA file"
    )
    figures.record("TLS", "protocols offered", ", ".join(sorted(offered)))
    for version, suites in sorted(offered.items()):
        figures.record("TLS", f"{version} cipher suites offered", ", ".join(suites))
    figures.record("TLS", "key exchange groups", ", ".join(curves))


def test_testssl_reports_no_vulnerability(stack, figures, tmp_path):
    testssl = shutil.which("testssl")
    if testssl is None:
        pytest.fail("testssl (Debian package testssl.sh) is not on PATH: `make deps` installs it")
    report = tmp_path / "testssl.json"
    command = [
        testssl,
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "batch",
        "--nodns",
        "none",
        "--connect-timeout",
        "5",
        "--openssl-timeout",
        "5",
        "--protocols",
        "--std",
        "--fs",
        "--vulnerable",
        "--jsonfile",
        str(report),
        f"127.0.0.1:{stack.https_port}",
    ]
    started = time.monotonic()
    scan = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    duration = time.monotonic() - started
    assert scan.returncode == 0, scan.stdout[-4000:] + scan.stderr[-2000:]
    findings = {f["id"]: f for f in json.loads(report.read_text())}
    missing = [check for check in VULNERABILITY_CHECKS if check not in findings]
    assert not missing, f"testssl.sh did not report {missing}"

    failing = {i: f for i, f in findings.items() if f["severity"] in FAILING_SEVERITIES}
    assert not failing, json.dumps(failing, indent=2)
    # Dynamic responses are not compressed (nginx_lb_gzip_dynamic): nothing for BREACH to work on.
    assert findings["BREACH"]["severity"] == "OK", findings["BREACH"]

    assert [findings[p]["finding"] for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")] == ["not offered"] * 4
    assert findings["TLS1_2"]["finding"].startswith("offered")
    assert findings["TLS1_3"]["finding"].startswith("offered")

    severities = collections.Counter(f["severity"] for f in findings.values())
    figures.record("TLS", "testssl.sh scan duration (-p -s -f -U)", round(duration, 1), "s")
    figures.record(
        "TLS",
        "testssl.sh findings by severity",
        ", ".join(f"{s} {n}" for s, n in sorted(severities.items())),
    )
    figures.record("TLS", "testssl.sh forward-secret suites", findings["PFS_ciphers"]["finding"])
    figures.record(
        "TLS",
        "testssl.sh ECDHE curves / DH groups",
        f"{findings['PFS_ECDHE_curves']['finding']} / {findings['DH_groups']['finding']}",
    )
