"""The validation filters: the strict forms of strings, IP addresses and networks, and the user's certificate
and private key."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pki
import pytest
import yaml
from conftest import COLLECTION, load_plugin

checks = load_plugin("filter", "checks")
bad_forms, not_ip, tls_problems = checks.bad_forms, checks.not_ip, checks.tls_problems

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_addresses_and_networks_pass_and_anything_else_is_returned():
    assert not_ip(["127.0.0.1", "::1", "10.1.2.3"]) == []
    assert not_ip(["999.1.1.1", "localhost", "", "127.0.0.1:80"]) == [
        "999.1.1.1",
        "localhost",
        "",
        "127.0.0.1:80",
    ]
    assert not_ip("10.0.0.0/8") == ["10.0.0.0/8"]
    assert not_ip(["10.0.0.0/8", "127.0.3.1/24", "fd00::/8", "127.0.0.9"], networks=True) == []
    assert not_ip(["10.0.0.0/99", "everyone", "10.0.0.0/"], networks=True) == [
        "10.0.0.0/99",
        "everyone",
        "10.0.0.0/",
    ]
    assert not_ip([]) == [] and not_ip(None) == []


def pem_pair(tmp_path, name="a", days=(-1, 30), password=None) -> tuple[str, str]:
    cert, key = pki.pem_pair(tmp_path, name, days, password, now=NOW)
    return str(cert), str(key)


def test_a_valid_pair_has_no_problem(tmp_path):
    assert tls_problems(*pem_pair(tmp_path), now=NOW) == []


def test_a_key_of_another_certificate_is_named(tmp_path):
    cert, _ = pem_pair(tmp_path, "a")
    _, other = pem_pair(tmp_path, "b")
    [problem] = tls_problems(cert, other, now=NOW)
    assert f"the certificate {cert} does not match the private key {other}" in problem


@pytest.mark.parametrize(
    ("days", "message"),
    [((-60, -1), "expired on 2026-05-31"), ((2, 30), "is not valid before 2026-06-03")],
)
def test_a_certificate_outside_its_validity_is_refused(tmp_path, days, message):
    [problem] = tls_problems(*pem_pair(tmp_path, days=days), now=NOW)
    assert message in problem


def test_an_encrypted_key_is_refused_with_what_to_do(tmp_path):
    cert, key = pem_pair(tmp_path, password=b"secret")
    [problem] = tls_problems(cert, key, now=NOW)
    assert f"the private key {key} is encrypted" in problem and "openssl pkey" in problem


def test_empty_missing_and_non_pem_files_are_named(tmp_path):
    cert, key = pem_pair(tmp_path)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"\n")
    text = tmp_path / "text.pem"
    text.write_text("not a certificate\n")
    assert tls_problems(str(empty), key, now=NOW) == [f"the certificate {empty} is empty"]
    assert tls_problems(cert, str(empty), now=NOW) == [f"the private key {empty} is empty"]
    [problem] = tls_problems(str(text), key, now=NOW)
    assert f"the certificate {text} is not a PEM certificate" in problem
    [problem] = tls_problems(cert, str(text), now=NOW)
    assert f"the private key {text} is not a PEM private key" in problem
    [problem] = tls_problems(str(tmp_path / "gone.pem"), key, now=NOW)
    assert "cannot be read" in problem


def test_swapped_files_say_so(tmp_path):
    cert, key = pem_pair(tmp_path)
    problems = tls_problems(key, cert, now=NOW)
    assert len(problems) == 2 and all("are the two files swapped?" in p for p in problems)


def test_a_corrupt_pem_block_is_named(tmp_path):
    _, key = pem_pair(tmp_path)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    [problem] = tls_problems(str(broken), key, now=NOW)
    assert f"the certificate {broken} cannot be parsed" in problem


# --- strict forms: every string that reaches nginx's config, a container or an image build -----------------
ROLES = COLLECTION / "roles"
FORM_MAPS = {
    "nginx_lb": yaml.safe_load((ROLES / "nginx_lb/vars/main.yml").read_text())["__nginx_lb_forms"],
    "app_pools": yaml.safe_load((ROLES / "app_pools/vars/main.yml").read_text())["__app_pools_forms"],
}
# What an attacker with extra vars would try: end a directive, open or close a block, start a comment, name
# a variable, quote, break the line, or overflow.
INJECTIONS = [
    "10s; } server { listen 127.0.0.1:18888; return 200 injected; } upstream x {",
    "10s\n",
    "10s\nserver { }",
    "a;b",
    "a{",
    "a}",
    "$remote_addr",
    "a$host",
    '"quoted"',
    "a'b",
    "a b",
    "a#comment",
    "a\\b",
    "a\r\n",
    "a\x00b",
    "x" * 5000,
    "",
]
STRING_OPTIONS_CHECKED_ELSEWHERE = {
    # IP addresses and networks: tenfold.stack.not_ip in the role's validate.yml
    "nginx_lb_listen_address",
    "nginx_lb_allowlist",
    "app_pools_bind_address",
    # a number or "auto" (validate.yml), a pool's members (the control API validates them)
    "nginx_lb_worker_processes",
    "nginx_lb_members",
    # the request (tenfold.stack.scale_plan); never in a container
    "app_pools_scale_request",
    "app_pools_scale_abort",
}


# In a double-quoted header value, ; { } # ' and spaces are text: what could break out is listed apart. An
# environment goes to Docker as data: its names must be names, its values only free of control characters.
BREAKS_QUOTES = [v for v in INJECTIONS if re.search(r'["\\$\x00-\x1f]', v) or len(v) > 1024]
BREAKS_ENV_VALUES = [v for v in INJECTIONS if re.search(r"[\x00-\x1f]", v) or len(v) > 4096]


def form_cases():
    for forms in FORM_MAPS.values():
        for name, form in forms.items():
            if form == "env":
                values = [{v: "x"} for v in INJECTIONS] + [{"KEY": v} for v in BREAKS_ENV_VALUES]
            elif form == "header":
                values = BREAKS_QUOTES
            else:  # "" is an optional form's "unset"; hosts are separated by spaces
                values = [
                    v for v in INJECTIONS if (v, form[-1]) != ("", "?") and (v, form) != ("a b", "hosts")
                ]
            for i, value in enumerate(values):
                yield pytest.param(name, form, value, id=f"{name}-{i}")


FORM_CASES = list(form_cases())


def test_the_injection_table_tries_at_least_twenty_values_on_the_variables_of_each_role():
    for forms in FORM_MAPS.values():
        assert sum(1 for case in FORM_CASES if case.values[0] in forms) >= 20


@pytest.mark.parametrize(("name", "form", "value"), FORM_CASES)
def test_an_injected_value_is_refused_with_a_message_naming_the_variable(name, form, value):
    [problem] = bad_forms({name: form}, [value])
    assert problem.startswith(f"{name} must be ") or problem.startswith(f"every entry of {name} must be ")


@pytest.mark.parametrize(
    ("form", "good"),
    [
        ("time", ["10s", "500ms", "1m30s", "60", "1d"]),
        ("size", ["64k", "10m", "1g", "4096"]),
        ("memory", ["512m", "1g", "1.5g"]),
        ("logsize", ["100M", "512k", "1G", "1048576"]),
        ("word", ["ECDHE-RSA-AES128-GCM-SHA256", "image/svg+xml", "http_502"]),
        ("image", ["tenfold/backend:local", "localhost:5000/team/app:v1.2", "debian@sha256:" + "a" * 64]),
        ("path", ["/etc/tenfold/prod/nginx", "/var/log/tenfold"]),
        ("hosts", ["localhost", "example.com www.example.com", "*.example.com"]),
        ("host", ["example.com", "10.0.0.1"]),
        ("address", ["10.0.0.1", "::1", "docker1.internal"]),
        ("header", ["default-src 'self'; img-src 'self' data:", "camera=(), microphone=()"]),
        ("cookie", ["tenfold_route"]),
    ],
)
def test_the_values_in_use_are_of_their_form(form, good):
    assert bad_forms({f"v{i}": form for i in range(len(good))}, good) == []


def test_a_logrotate_size_in_nginx_units_is_refused():
    assert bad_forms({"nginx_lb_logrotate_maxsize": "logsize?"}, ["100m"]) == [
        "nginx_lb_logrotate_maxsize must be a logrotate size such as 512k, 100M or 1G (or \"\"); not '100m'"
    ]


def test_a_list_is_checked_entry_by_entry_and_an_environment_by_name_and_value():
    assert bad_forms({"ciphers": "word"}, [["AES128-SHA", "x;y"]]) == [
        "every entry of ciphers must be a word of letters, digits and _ . + / -; not 'x;y'"
    ]
    [problem] = bad_forms({"env": "env"}, [{"OK": "a b = c", "BAD NAME": "1", "NL": "a\nb"}])
    assert problem.endswith("not 'BAD NAME=1', 'NL=a\\nb'")


def test_optional_forms_take_an_empty_string_and_nothing_else_loose():
    assert bad_forms({"buffer": "size?"}, [""]) == []
    assert bad_forms({"buffer": "size?"}, ["64k;"]) == [
        "buffer must be a size such as 64k, 10m or 1g (or \"\"); not '64k;'"
    ]


@pytest.mark.parametrize("role", ["nginx_lb", "app_pools"])
def test_every_string_option_of_the_role_has_a_form(role):
    """Every option of type str or list without choices is in the role's forms, or checked otherwise."""
    specs = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    strings = {
        name
        for name, spec in options.items()
        if spec.get("type", "str") in ("str", "list", "dict", "raw")
        and "choices" not in spec
        and spec.get("elements") != "int"
    }
    missing = strings - set(FORM_MAPS[role]) - STRING_OPTIONS_CHECKED_ELSEWHERE
    assert missing == set()
