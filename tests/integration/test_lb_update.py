"""The tenfold.stack.lb_update module against a real nginx container of this test's own (stack `lbupdtest`).

The container runs the LB image with no network and a minimal configuration; the module is run the way a
playbook runs it (`ansible localhost -m tenfold.stack.lb_update`). The container and the directories are
removed afterwards, also when a test fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker.types import Mount
from helpers import BIN, ROOT, ansible_env

pytestmark = pytest.mark.integration

STACK = "lbupdtest"
NAME = f"{STACK}-lb"
IMAGE = "tenfold/nginx:local"
CONF = "/etc/tenfold-nginx"
NGINX_CONF = f"""
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
    access_log off;
    include {CONF}/upstreams.conf;
    server {{
        listen 127.0.0.1:8080;
        location / {{ proxy_pass http://app; }}
    }}
}}
"""


def upstreams(*ports: int) -> str:
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in ports)
    return f"upstream app {{\n{servers}}}\n"


@dataclass
class Lb:
    live: Path  # what the module is told is live
    seen: Path  # what the container reads
    staging: Path
    container: object

    def run(self, files: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
        args = {
            "container": NAME,
            "image": IMAGE,
            "live_dir": str(self.live),
            "staging_dir": str(self.staging),
            "conf_path": CONF,
            "files": files,
            "labels": {"tenfold.stack": STACK},
        }
        return subprocess.run(
            [
                str(BIN / "ansible"),
                "localhost",
                "-m",
                "tenfold.stack.lb_update",
                "-a",
                json.dumps(args),
                *flags,
            ],
            cwd=ROOT,
            env=ansible_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def master_pid(self) -> str:
        return self.container.exec_run(["cat", "/tmp/nginx.pid"]).output.decode().strip()


def remove_stack(engine: docker.DockerClient) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"tenfold.stack={STACK}"}):
        container.remove(force=True)


def start(engine: docker.DockerClient, seen: Path) -> object:
    container = engine.containers.run(
        IMAGE,
        name=NAME,
        command=["nginx", "-c", f"{CONF}/nginx.conf", "-g", "daemon off;"],
        detach=True,
        network_mode="none",
        labels={"tenfold.stack": STACK},
        mounts=[Mount(CONF, str(seen), type="bind", read_only=True)],
    )
    deadline = time.monotonic() + 30
    while container.exec_run(["test", "-s", "/tmp/nginx.pid"]).exit_code != 0:
        assert time.monotonic() < deadline, container.logs().decode()
        time.sleep(0.2)
    return container


@pytest.fixture
def lb(engine: docker.DockerClient, tmp_path: Path) -> Iterator[Lb]:
    remove_stack(engine)  # leftovers of an interrupted earlier run
    root = Path("/tmp") / f"{STACK}-{tmp_path.name}"
    live, staging = root / "live", root / "staging"
    for path in (live, staging):
        path.mkdir(parents=True)
    (live / "nginx.conf").write_text(NGINX_CONF)
    (live / "upstreams.conf").write_text(upstreams(9001))
    try:
        yield Lb(live, live, staging, start(engine, live))
    finally:
        remove_stack(engine)
        shutil.rmtree(root, ignore_errors=True)
        assert not engine.containers.list(all=True, filters={"label": f"tenfold.stack={STACK}"})


def test_a_valid_change_is_promoted_and_reloaded_and_a_second_run_changes_nothing(lb: Lb) -> None:
    master = lb.master_pid()
    run = lb.run({"upstreams.conf": upstreams(9001, 9002)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"reloaded": true' in run.stdout and '"changed": true' in run.stdout
    assert (lb.live / "upstreams.conf").read_text() == upstreams(9001, 9002)
    assert (lb.staging / "upstreams.conf").read_text() == upstreams(9001, 9002)
    # a graceful reload: the same master process goes on
    assert lb.master_pid() == master
    again = lb.run({"upstreams.conf": upstreams(9001, 9002)})
    assert again.returncode == 0 and '"changed": false' in again.stdout, again.stdout


def test_a_change_nginx_rejects_is_never_promoted(lb: Lb) -> None:
    before = (lb.live / "upstreams.conf").read_text()
    run = lb.run({"upstreams.conf": "upstream app {\n    server 127.0.0.1:9001 weight=bogus;\n}\n"})
    assert run.returncode != 0
    assert 'invalid parameter "weight=bogus"' in run.stdout
    assert "it was not promoted and the running load balancer keeps its old configuration" in run.stdout
    assert (lb.live / "upstreams.conf").read_text() == before
    assert (lb.staging / "upstreams.conf").read_text() == before  # no rejected attempt left staged


def test_a_change_the_running_lb_rejects_is_put_back(lb: Lb, engine: docker.DockerClient) -> None:
    # The container reads another directory than the module's live one, which breaks after nginx started:
    # the throwaway container accepts the change, the running LB's own nginx -t does not.
    seen = lb.live.parent / "seen"
    shutil.copytree(lb.live, seen)
    lb.container.remove(force=True)
    lb.container = start(engine, seen)
    (seen / "upstreams.conf").write_text("upstream app {\n")
    before = (lb.live / "upstreams.conf").read_text()
    run = lb.run({"upstreams.conf": upstreams(9001, 9003)})
    assert run.returncode != 0
    assert "rejected the live configuration" in run.stdout and "was put back" in run.stdout
    assert (lb.live / "upstreams.conf").read_text() == before
    lb.container.reload()
    assert lb.container.status == "running"


def test_a_stale_staged_copy_is_brought_back_to_the_live_one_when_nothing_changes(lb: Lb) -> None:
    # as after a restore wrote the live directory: the role renders into staging, which must not drift
    (lb.staging / "upstreams.conf").write_text(upstreams(9001, 9009))
    run = lb.run({"upstreams.conf": (lb.live / "upstreams.conf").read_text()})
    assert run.returncode == 0 and '"changed": false' in run.stdout, run.stdout
    assert (lb.staging / "upstreams.conf").read_text() == (lb.live / "upstreams.conf").read_text()


def test_check_mode_shows_the_diff_and_writes_nothing(lb: Lb) -> None:
    before = (lb.live / "upstreams.conf").read_text()
    run = lb.run({"upstreams.conf": upstreams(9001, 9004)}, "--check", "--diff")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "+    server 127.0.0.1:9004;" in run.stdout
    assert (lb.live / "upstreams.conf").read_text() == before
    assert not (lb.staging / "upstreams.conf").exists()


def test_a_stopped_lb_or_an_unsafe_name_is_refused_with_nothing_changed(lb: Lb) -> None:
    before = (lb.live / "upstreams.conf").read_text()
    bad = lb.run({"../upstreams.conf": upstreams(9001)})
    assert bad.returncode != 0 and "must be a path relative to the configuration directory" in bad.stdout
    lb.container.stop(timeout=5)
    run = lb.run({"upstreams.conf": upstreams(9001, 9005)})
    assert run.returncode != 0 and f"{NAME} is exited, not running" in run.stdout
    assert (lb.live / "upstreams.conf").read_text() == before
    assert (lb.staging / "upstreams.conf").read_text() == before
