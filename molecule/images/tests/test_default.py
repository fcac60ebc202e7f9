"""The images role builds the base, nginx, frontend and backend images; every app image serves /health."""

import json
import re
import time
import uuid

import pytest

BASE = "tenfold/debian:bookworm"
BUILT = ["nginx", "frontend", "backend"]
APPS = ["frontend", "backend"]
TEST_LABEL = "tenfold.test=molecule-images"


def inspect_image(host, ref):
    return json.loads(host.check_output(f"docker image inspect {ref}"))[0]


@pytest.mark.parametrize("ref", [BASE] + [f"tenfold/{name}:local" for name in BUILT])
def test_image_carries_the_hash_of_its_inputs(host, ref):
    labels = inspect_image(host, ref)["Config"]["Labels"]
    assert re.fullmatch(r"[0-9a-f]{64}", labels["tenfold.inputs-hash"])


@pytest.mark.parametrize("name", BUILT)
def test_image_is_built_from_the_current_base_image(host, name):
    labels = inspect_image(host, f"tenfold/{name}:local")["Config"]["Labels"]
    assert labels["tenfold.image"] == name
    assert labels["tenfold.base-image-id"] == inspect_image(host, BASE)["Id"]


def test_base_image_is_minimal_debian_bookworm(host):
    out = host.check_output(f"docker run --rm --label {TEST_LABEL} {BASE} cat /etc/debian_version")
    assert out.startswith("12.")


@pytest.mark.parametrize("name", APPS)
def test_app_image_runs_as_uid_10001(host, name):
    assert inspect_image(host, f"tenfold/{name}:local")["Config"]["User"] == "10001:10001"
    out = host.check_output(f"docker run --rm --label {TEST_LABEL} tenfold/{name}:local id")
    assert out.startswith("uid=10001(app) gid=10001(app)")


def test_nginx_image_has_what_the_lb_needs(host):
    checks = (
        "nginx -t -q -c /usr/share/tenfold/nginx-module-check.conf"
        " && test -f /etc/nginx/mime.types && test ! -e /etc/nginx/sites-enabled/default"
        " && nginx -v 2>&1 | grep -q 'nginx/1.22'"
    )
    result = host.run(f'docker run --rm --label {TEST_LABEL} tenfold/nginx:local bash -c "{checks}"')
    assert result.rc == 0, result.stderr


@pytest.mark.parametrize("name", APPS)
def test_app_container_answers_health_hardened_as_app_pools_runs_it(host, name):
    container = f"molecule-images-{name}-{uuid.uuid4().hex[:8]}"
    try:
        host.check_output(
            f"docker run -d --name {container} --label {TEST_LABEL} --user 10001 --read-only"
            " --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true"
            f" -e INSTANCE_NAME={container} -p 127.0.0.1::8080 tenfold/{name}:local"
        )
        address = host.check_output(f"docker port {container} 8080/tcp").splitlines()[0]
        health = None
        for _ in range(100):
            result = host.run(f"curl -fsS http://{address}/health")
            if result.rc == 0:
                health = json.loads(result.stdout)
                break
            time.sleep(0.2)
        assert health == {"status": "ok", "instance": container, "pool": name, "inflight": 0}
        assert host.run(f"docker exec {container} /usr/local/bin/healthcheck").rc == 0
    finally:
        host.run(f"docker rm -f {container}")
