"""What tenfold.stack.pool's --diff says per replica: pure logic (config dicts in, lines out) and the mapping
of a container's docker-inspect attrs back to the wanted config's shape, no Docker."""

from __future__ import annotations

from ansible_collections.tenfold.stack.plugins.module_utils import engine as docker_utils
from ansible_collections.tenfold.stack.plugins.module_utils import pool as tp
from test_pool_plan import spec as plan_spec

SECRET = "sekrit-value-0815"


def spec(**overrides):
    """test_pool_plan's spec, with a secret in its environment and a full-length image ID."""
    return plan_spec(**{"image_id": "sha256:" + "a" * 64, "env": {"API_TOKEN": SECRET}, **overrides})


def inspect_attrs(config: dict, image_env: dict) -> dict:
    """What `docker inspect` reports for a container created from `config` (as the engine fills it in)."""
    env = {**image_env, **config["environment"]}
    bind = config["ports"]["8080/tcp"]
    health = config["healthcheck"]
    return {
        "Name": "/" + config["name"],
        "Image": config["image"],
        "Config": {
            "Hostname": config["hostname"],
            "User": config["user"],
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {**config["labels"], tp.LABEL_CONFIG: "0123", "tenfold.image": "backend"},
            "StopSignal": config["stop_signal"],
            "Healthcheck": {
                "Test": health["test"],
                "Interval": health["interval"],
                "Timeout": health["timeout"],
                "StartPeriod": health["start_period"],
                "Retries": health["retries"],
            },
        },
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": bind[0], "HostPort": str(bind[1])}]},
            "NetworkMode": config["network"] or "bridge",
            "NanoCpus": config["nano_cpus"],
            "CpuShares": config["cpu_shares"],
            "Memory": config["mem_limit"],
            "MemoryReservation": config["mem_reservation"],
            "MemorySwap": config["memswap_limit"],
            "PidsLimit": config["pids_limit"],
            "CapDrop": config["cap_drop"],
            "SecurityOpt": config["security_opt"],
            "ReadonlyRootfs": config["read_only"],
            "Tmpfs": config["tmpfs"],
            "Init": config["init"],
            "RestartPolicy": {**config["restart_policy"], "MaximumRetryCount": 0}
            if "MaximumRetryCount" not in config["restart_policy"]
            else config["restart_policy"],
            "LogConfig": {"Type": config["log_config"]["type"], "Config": config["log_config"]["config"]},
        },
    }


IMAGE_ENV = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "MAX_CONCURRENCY": "32", "PORT": "8080"}


def observed(config: dict, wanted: dict) -> dict:
    return docker_utils.observed_config(inspect_attrs(config, IMAGE_ENV), IMAGE_ENV, wanted["environment"])


def test_an_unchanged_container_read_back_from_docker_shows_no_change():
    wanted = spec().container_config(2)
    assert tp.config_changes(observed(wanted, wanted), wanted) == []


def test_a_changed_restart_policy_on_failure_reads_back_without_a_change():
    wanted = spec(restart_policy="on-failure").container_config(1)
    assert tp.config_changes(observed(wanted, wanted), wanted) == []


def test_image_cpus_memory_user_and_restart_policy_changes_are_each_named():
    old = spec(restart_policy="always", user="10002").container_config(1)
    new = spec(image_id="sha256:" + "b" * 64, cpus=0.5, memory=tp.parse_memory("512m")).container_config(1)
    lines = tp.config_changes(observed(old, new), new)
    assert "image: aaaaaaaaaaaa -> bbbbbbbbbbbb" in lines
    assert "cpus: 1 -> 0.5" in lines
    assert "cpu shares: 512 -> 256" in lines
    assert "memory limit: 1g -> 512m" in lines
    assert "memory reservation: 512m -> 256m" in lines
    assert "memory+swap limit: 1g -> 512m" in lines
    assert "user: 10002 -> 10001" in lines
    assert "restart policy: always -> unless-stopped" in lines
    assert not any(line.startswith("env") for line in lines)


def test_ports_and_healthcheck_changes_are_named():
    old = spec().container_config(1)
    new = spec(bind_address="0.0.0.0").container_config(1)
    new["healthcheck"] = {**new["healthcheck"], "interval": 5 * 10**9}
    lines = tp.config_changes(observed(old, new), new)
    assert lines == [
        "ports: 8080/tcp on 127.0.0.1:18201 -> 8080/tcp on 0.0.0.0:18201",
        "healthcheck interval: 10s -> 5s",
    ]


def test_env_changes_name_the_keys_and_never_a_value():
    old = spec(env={"API_TOKEN": SECRET, "GONE": "old-" + SECRET, "SAME": "x"}).container_config(1)
    new = spec(
        env={"API_TOKEN": SECRET + "-rotated", "NEW_KEY": "new-" + SECRET, "SAME": "x"}
    ).container_config(1)
    lines = tp.config_changes(observed(old, new), new)
    assert lines == ["env added: NEW_KEY", "env removed: GONE", "env changed: API_TOKEN"]
    assert SECRET not in "\n".join(lines)


def test_the_images_own_environment_is_not_a_removed_key_but_an_override_of_it_is():
    new = spec(env={}).container_config(1)
    old = spec(env={"MAX_CONCURRENCY": "4"}).container_config(1)
    assert tp.config_changes(observed(new, new), new) == []
    assert tp.config_changes(observed(old, new), new) == ["env removed: MAX_CONCURRENCY"]


def test_env_changes_of_plain_dicts():
    assert tp.env_changes({"A": "1", "B": "2"}, {"A": "1", "B": "3", "C": "4"}) == [
        "env added: C",
        "env changed: B",
    ]
    assert tp.env_changes({"A": "1"}, {"A": "1"}) == []


def test_sizes_show_in_the_largest_unit_that_divides_them():
    assert [tp.show_size(n) for n in (1024**3, 512 * 1024**2, 1536 * 1024, 1000)] == [
        "1g",
        "512m",
        "1536k",
        "1000b",
    ]


def report(existing, replicas, wanted, warm=0, changes=None):
    todo = tp.plan(existing, replicas, wanted, warm)
    current = {r.index: r.name for r in existing if r.index >= 1 and r.name not in todo.remove}
    return tp.plan_report(todo, "s", "backend", current, changes or {})


def replica(index, config_hash="h", running=True, warm=False):
    name = tp.warm_name("s", "backend", index) if warm else tp.replica_name("s", "backend", index)
    return tp.Replica(name=name, index=index, config_hash=config_hash, running=running, warm=warm)


def test_report_says_created_removed_and_recreated_with_what_differs():
    existing = [replica(1), replica(2, "old"), replica(3), replica(4)]
    lines = report(existing, 2, {1: "h", 2: "h"}, changes={2: ["env changed: API_TOKEN"]})
    assert lines == [
        "s-backend-4: removed",
        "s-backend-3: removed",
        "s-backend-2: recreated",
        "  env changed: API_TOKEN",
    ]
    assert report([replica(1)], 2, {1: "h", 2: "h", 3: "h"}, warm=1) == [
        "s-backend-2: created",
        "s-backend-3-warm: created (warm)",
    ]


def test_report_says_promoted_and_demoted_for_warm_replicas():
    up = report([replica(1), replica(2, warm=True)], 2, {1: "h", 2: "h", 3: "h"}, warm=1)
    assert up == ["s-backend-2-warm: promoted to s-backend-2", "s-backend-3-warm: created (warm)"]
    down = report([replica(1), replica(2), replica(3, warm=True)], 1, {1: "h", 2: "h"}, warm=1)
    assert down == ["s-backend-3-warm: removed", "s-backend-2: demoted to s-backend-2-warm (warm)"]


def test_report_says_a_stopped_warm_replica_is_started_before_its_promotion():
    lines = report([replica(1), replica(2, running=False, warm=True)], 2, {1: "h", 2: "h"})
    assert lines == ["s-backend-2-warm: promoted to s-backend-2 (started first)"]


def test_report_of_a_recreate_without_a_visible_difference_says_so():
    lines = report([replica(1, "old")], 1, {1: "h"})
    assert lines == ["s-backend-1: recreated", "  config hash differs, no compared setting does"]


def test_report_of_a_converged_pool_is_empty():
    assert report([replica(1), replica(2)], 2, {1: "h", 2: "h"}) == []
