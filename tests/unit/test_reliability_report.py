"""scripts/reliability_report.py: JUnit outcomes and recorded figures become the doc's Measured section."""

from __future__ import annotations

import reliability_report as rr

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3">
<testcase classname="tests.integration.test_abuse" name="test_flood[a|b]" time="2.5"/>
<testcase classname="tests.integration.test_abuse" name="test_slow" time="11.25">
<failure message="x">boom</failure></testcase>
<testcase classname="tests.integration.test_tls_scan" name="test_scan" time="0.1">
<skipped message="s"/></testcase>
</testsuite></testsuites>
"""


def test_outcomes_read_each_case_of_the_junit_report(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert rr.outcomes(junit) == [
        {"test": "test_abuse::test_flood[a|b]", "outcome": "passed", "seconds": 2.5},
        {"test": "test_abuse::test_slow", "outcome": "failed", "seconds": 11.25},
        {"test": "test_tls_scan::test_scan", "outcome": "skipped", "seconds": 0.1},
    ]


def test_render_groups_figures_by_section_and_counts_the_passed_tests(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    figures = [
        {"section": "Abuse", "label": "cut after", "value": 10.2, "unit": "s", "note": "header a|b"},
        {"section": "TLS", "label": "verdict", "value": "compliant", "unit": "", "note": ""},
        {"section": "Abuse", "label": "cut", "value": 50, "unit": "connections", "note": ""},
    ]
    text = rr.render(figures, rr.outcomes(junit), {"nproc": "2"}, "python scripts/reliability_report.py")
    assert "| nproc | 2 |" in text
    abuse, tls = text.index("### Abuse"), text.index("### TLS")
    assert (
        abuse
        < text.index("| cut after | 10.2 s | header a\\|b |")
        < text.index("| cut | 50 connections |")
        < tls
    )
    assert "| verdict | compliant |  |" in text
    assert "### Tests: 1 of 3 passed, 14 s in all" in text
    assert "| `test_abuse::test_flood[a\\|b]` | passed | 2.5 |" in text
    assert "| `test_abuse::test_slow` | failed | 11.2 |" in text
