"""tenfold_monitor.status (auto-scale.sh status), its pure parts: LB membership, scale events, CPU and
memory, the table."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from tenfold_monitor import events
from tenfold_monitor import status as ts


def lb_member(port: int, state: str = "active", inflight: int = 0, failing: bool = False) -> dict:
    pool = "backend" if port >= 18200 else "frontend"
    return {
        "id": f"tenfold-{pool}-{port % 100}",
        "address": "127.0.0.1",
        "port": port,
        "state": state,
        "inflight": inflight,
        "failing": failing,
    }


def members_answer(pools: dict[str, list[dict]]) -> str:
    """The text of GET /members, as the LB writes it."""
    body = {name: {"pool": name, "generation": 3, "members": listed} for name, listed in pools.items()}
    return json.dumps({"pools": body})


MEMBERS = members_answer(
    {
        "frontend": [lb_member(18101, inflight=4), lb_member(18102, inflight=1)],
        "backend": [
            lb_member(18201, inflight=2),
            lb_member(18202, state="draining", inflight=1),
            lb_member(18204, failing=True),
        ],
    }
)


def event(stack: str = "tenfold", result: str = "ok", **extra: object) -> dict:
    raw = {
        "start": "2026-11-27T12:00:22.123Z",
        "end": "2026-11-27T12:00:40.000Z",
        "duration_s": 17.9,
        "trigger": "manual",
        "stack": stack,
        "request": {"pool": "backend", "direction": "up", "step": "", "replicas": ""},
        "pools": [
            {"pool": "frontend", "current": 3, "target": 3, "direction": "none", "clamped": False},
            {"pool": "backend", "current": 3, "target": 4, "direction": "up", "clamped": False},
        ],
        "result": result,
        "failed_task": None,
        "error": None,
    }
    raw.update(extra)
    return raw


# --- LB membership ----------------------------------------------------------------------------------
def test_members_api_answer_is_parsed_per_pool():
    members = ts.parse_members(MEMBERS)
    assert set(members) == {"frontend", "backend"}
    assert [(m.endpoint, m.state, m.inflight) for m in members["backend"]] == [
        ("127.0.0.1:18201", "active", 2),
        ("127.0.0.1:18202", "draining", 1),
        ("127.0.0.1:18204", "active", 0),
    ]


@pytest.mark.parametrize("text", ["", "{not json", '{"pools": {"backend": {"members": [{"id": "x"}]}}}'])
def test_an_answer_that_is_not_a_members_answer_means_membership_unknown(text):
    assert ts.parse_members(text) is None


def test_an_lb_that_does_not_answer_means_membership_unknown():
    assert ts.read_members("http://127.0.0.1:1/members", timeout=0.5) is None


def test_each_replica_is_an_active_member_draining_or_not_in_the_lb():
    members = ts.parse_members(MEMBERS)
    active, draining, absent = ts.with_membership([replica(1), replica(2), replica(3)], members)
    assert (active.in_lb, active.lb_state, active.lb_inflight, active.lb_failing) == (
        True,
        "active",
        2,
        False,
    )
    assert (draining.in_lb, draining.lb_state, draining.lb_inflight) == (False, "draining", 1)
    assert (absent.in_lb, absent.lb_state, absent.lb_inflight) == (False, ts.NOT_IN_LB, None)


def test_a_replica_published_on_a_wildcard_address_is_matched_on_loopback():
    wildcard = replace(replica(1), address="0.0.0.0:18201")
    [matched] = ts.with_membership([wildcard], ts.parse_members(MEMBERS))
    assert matched.lb_state == "active" and matched.lb_inflight == 2


def test_a_member_of_another_pool_at_the_same_address_is_not_this_replicas():
    same_port = ts.parse_members(members_answer({"frontend": [lb_member(18201)]}))
    [found] = ts.with_membership([replica(1)], same_port)
    assert found.lb_state == ts.NOT_IN_LB


def test_unknown_membership_leaves_the_replicas_unknown():
    [found] = ts.with_membership([replica(1)], None)
    assert (found.in_lb, found.lb_state, found.lb_inflight) == (None, None, None)


def test_draining_members_are_not_counted_in_the_lb_but_are_not_strays():
    members = ts.parse_members(MEMBERS)
    backend = next(p for p in ts.pool_statuses([replica(1), replica(2)], {}, members) if p.pool == "backend")
    assert backend.in_lb == 2  # 18201 and 18204 (failing, still active); 18202 drains
    assert ts.strays([replica(1), replica(2)], members)["backend"] == ["127.0.0.1:18204"]
    assert ts.strays([replica(1)], members)["backend"] == ["127.0.0.1:18202", "127.0.0.1:18204"]


def test_the_default_members_url_takes_the_inventorys_status_port(tmp_path):
    assert ts.default_members_url(tmp_path) == "http://127.0.0.1:8081/members"
    inventory = tmp_path / "inventories/local/group_vars"
    inventory.mkdir(parents=True)
    (inventory / "all.yml").write_text("tenfold_stack: blue\nnginx_lb_status_port: 18081\n")
    assert ts.default_members_url(tmp_path) == "http://127.0.0.1:18081/members"


def test_the_members_url_is_an_option():
    assert ts.parse_args(["--members-url", "http://127.0.0.1:29081/members"]).members_url == (
        "http://127.0.0.1:29081/members"
    )
    assert ts.parse_args([]).members_url is None  # main() takes default_members_url()


@pytest.mark.parametrize(
    ("published", "key"),
    [
        ("127.0.0.1:18201", "127.0.0.1:18201"),
        ("0.0.0.0:18201", "127.0.0.1:18201"),
        ("10.0.0.5:18201", "10.0.0.5:18201"),
        (None, None),
    ],
)
def test_a_wildcard_published_address_is_reached_on_loopback(published, key):
    assert ts.member_key(published) == key


# --- events -----------------------------------------------------------------------------------------
def test_events_skip_malformed_lines_and_keep_file_order():
    lines = [
        json.dumps(event(trigger="manual")),
        "{not json",
        "",
        "[1, 2]",
        json.dumps({"no": "stack"}),
        json.dumps(event(trigger="monitor", pools="oops", duration_s="slow")),
        json.dumps(event(trigger="awx")),
    ]
    events = ts.read_events(lines, "tenfold")
    assert [e.trigger for e in events] == ["manual", "monitor", "awx"]
    assert events[1].pools == [] and events[1].duration_s is None


def test_events_of_other_stacks_are_left_out():
    lines = [json.dumps(event(stack="tenfoldit")), json.dumps(event(stack="tenfold"))]
    assert [e.stack for e in ts.read_events(lines, "tenfold")] == ["tenfold"]


def test_malformed_pool_entries_are_dropped_and_the_rest_kept():
    raw = event(pools=[{"pool": "backend", "current": "3", "target": 5}, {"pool": "frontend"}, "x"])
    parsed = events.parse(json.dumps(raw))
    assert parsed is not None
    assert parsed.pools == [events.PoolChange("backend", 3, 5)]


def test_wanted_is_the_target_of_the_last_successful_run_per_pool():
    events = ts.read_events(
        [
            json.dumps(event()),  # backend 3 -> 4, frontend stays 3
            json.dumps(event(pools=[{"pool": "backend", "current": 4, "target": 6}])),
            json.dumps(event(result="failed", pools=[{"pool": "backend", "current": 6, "target": 9}])),
        ],
        "tenfold",
    )
    assert ts.wanted_from_events(events) == {"frontend": 3, "backend": 6}


def test_an_event_shows_the_pools_it_changed_else_the_pool_asked_about():
    changed = events.parse(json.dumps(event()))
    unchanged = events.parse(
        json.dumps(
            event(
                pools=[
                    {"pool": "frontend", "current": 3, "target": 3},
                    {"pool": "backend", "current": 10, "target": 10},
                ]
            )
        )
    )
    assert [c.pool for c in ts.shown_changes(changed)] == ["backend"]
    assert [c.pool for c in ts.shown_changes(unchanged)] == ["backend"]


# --- CPU and memory -----------------------------------------------------------------------------------
def sample(total: int, pre_total: int, system: int, pre_system: int, cpus: int | None = 2) -> dict:
    return {
        "cpu_stats": {
            "cpu_usage": {"total_usage": total, "percpu_usage": [0] * 4},
            "system_cpu_usage": system,
            "online_cpus": cpus,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
    }


def test_cpu_percent_is_the_share_of_the_host_times_its_cpus():
    # 0.5 s of CPU over 2 s of host time on 2 CPUs: half a core, 50 %.
    assert ts.cpu_percent(sample(1_500_000_000, 1_000_000_000, 4_000_000_000, 2_000_000_000)) == 50.0


def test_cpu_percent_counts_per_cpu_usage_when_online_cpus_is_missing():
    assert ts.cpu_percent(sample(2_000, 1_000, 4_000, 0, cpus=None)) == 100.0


def test_cpu_percent_is_unknown_without_a_previous_reading():
    assert ts.cpu_percent(sample(1_000, 0, 5_000, 5_000)) is None
    assert ts.cpu_percent({"cpu_stats": {}, "precpu_stats": {}}) is None
    assert ts.cpu_percent({}) is None


def test_memory_leaves_out_inactive_page_cache():
    v1 = {"memory_stats": {"usage": 100, "limit": 1000, "stats": {"total_inactive_file": 30}}}
    v2 = {"memory_stats": {"usage": 100, "limit": 1000, "stats": {"inactive_file": 40}}}
    assert ts.memory_usage(v1) == (70, 1000)
    assert ts.memory_usage(v2) == (60, 1000)
    assert ts.memory_usage({"memory_stats": {}}) is None


# --- combining and rendering --------------------------------------------------------------------------
def replica(
    index: int, pool: str = "backend", state: str = "running", health: str = "healthy", warm: bool = False
) -> object:
    return ts.Replica(
        name=f"tenfold-{pool}-{index}" + ("-warm" if warm else ""),
        pool=pool,
        index=index,
        state=state,
        health=health,
        address=f"127.0.0.1:{18200 + index if pool == 'backend' else 18100 + index}",
        cpu_percent=1.25 if state == "running" else None,
        memory_used=50 * 2**20 if state == "running" else None,
        memory_limit=2**30 if state == "running" else None,
    )


def sample_status() -> object:
    replicas = [
        replica(1, "frontend"),
        replica(1),
        replica(2, health="starting"),
        replica(3, state="exited", health="unhealthy"),
        replica(4, warm=True),
    ]
    members = ts.parse_members(
        members_answer(
            {
                "frontend": [lb_member(18101, inflight=4)],
                "backend": [
                    lb_member(18201, inflight=2),
                    lb_member(18202, state="draining", inflight=1),
                    lb_member(18209),
                ],
            }
        )
    )
    events = ts.read_events(
        [
            json.dumps(event()),
            json.dumps(event(result="failed", failed_task="Wait for the new replicas", duration_s=61.04)),
        ],
        "tenfold",
    )
    return ts.StackStatus(
        stack="tenfold",
        generated_at="2026-11-27T12:30:00Z",
        members_url="http://127.0.0.1:8081/members",
        members_known=True,
        lb=ts.LoadBalancer("tenfold-lb", "running", "healthy"),
        pools=ts.pool_statuses(replicas, {"backend": 4}, members),
        replicas=ts.with_membership(replicas, members),
        events=events,
        members_without_container=ts.strays(replicas, members),
    )


def test_pools_count_running_healthy_and_lb_members():
    status = sample_status()
    frontend, backend = status.pools
    assert (frontend.wanted, frontend.wanted_from, frontend.running, frontend.healthy) == (
        1,
        "containers",
        1,
        1,
    )
    assert (backend.wanted, backend.wanted_from, backend.running, backend.healthy) == (4, "event", 2, 1)
    assert backend.in_lb == 2  # 18201 and 18209; 18202 drains
    assert status.members_without_container == {"backend": ["127.0.0.1:18209"]}


SAMPLE_TABLE = """\
tenfold stack 'tenfold'  (2026-11-27 12:30:00Z)

Load balancer: tenfold-lb  running  healthy

POOL      WANTED  RUNNING  HEALTHY  IN LB  WARM
frontend      1*        1        1      1     0
backend        4        2        1      2     1
* no successful scale run recorded: wanted = containers found
! backend: the LB lists 127.0.0.1:18209, which no container publishes

REPLICA                 STATE    HEALTH     CPU %  MEMORY          ADDRESS          IN LB     LB INFLIGHT
tenfold-frontend-1      running  healthy      1.2  50 MiB / 1 GiB  127.0.0.1:18101  active              4
tenfold-backend-1       running  healthy      1.2  50 MiB / 1 GiB  127.0.0.1:18201  active              2
tenfold-backend-2       running  starting     1.2  50 MiB / 1 GiB  127.0.0.1:18202  draining            1
tenfold-backend-3       exited   unhealthy      -  -               127.0.0.1:18203  no                  -
tenfold-backend-4-warm  running  healthy      1.2  50 MiB / 1 GiB  127.0.0.1:18204  warm                -

Last 5 scale events:
TIME (UTC)            TRIGGER  POOLS         DURATION  RESULT
2026-11-27 12:00:22Z  manual   backend 3->4    17.9 s  ok
2026-11-27 12:00:22Z  manual   backend 3->4    61.0 s  failed: Wait for the new replicas
"""


def test_table_of_a_sample_reads_at_a_glance():
    assert ts.render_table(sample_status()) == SAMPLE_TABLE


def test_table_says_membership_is_unknown_when_the_members_api_does_not_answer():
    replicas = [replica(1)]
    unknown = replace(
        sample_status(),
        members_known=False,
        pools=ts.pool_statuses(replicas, {}, None),
        replicas=ts.with_membership(replicas, None),
        members_without_container=ts.strays(replicas, None),
    )
    lines = ts.render_table(unknown).splitlines()
    assert "LB members unknown: no readable answer from http://127.0.0.1:8081/members (?)." in lines
    assert "backend      1*        1        1      ?     0" in lines
    row = next(line for line in lines if line.startswith("tenfold-backend-1"))
    assert row.split()[-3:] == ["127.0.0.1:18201", "?", "?"]


def test_table_names_the_replicas_the_lb_marked_failing():
    replicas = ts.with_membership([replica(4)], ts.parse_members(MEMBERS))
    lines = ts.render_table(replace(sample_status(), replicas=replicas)).splitlines()
    assert "! tenfold-backend-4: failing, the LB rests it (no new requests until fail_timeout)" in lines
    assert next(line for line in lines if line.startswith("tenfold-backend-4")).split()[-2:] == [
        "active",
        "0",
    ]


def test_a_stack_without_containers_says_so():
    status = ts.StackStatus("ghost", "2026-11-27T12:30:00Z", "http://x/members", False, None, [], [], [])
    text = ts.render_table(status)
    assert "No containers of stack 'ghost'" in text
    assert "none recorded" in text


def test_json_holds_the_same_data():
    data = json.loads(ts.render_json(sample_status()))
    assert [p["pool"] for p in data["pools"]] == ["frontend", "backend"]
    assert data["replicas"][1]["in_lb"] is True and data["replicas"][2]["in_lb"] is False
    assert data["replicas"][2]["lb_state"] == "draining" and data["replicas"][2]["lb_inflight"] == 1
    assert data["replicas"][3]["lb_state"] == "absent" and data["replicas"][3]["lb_inflight"] is None
    assert data["members_known"] is True and data["members_url"] == "http://127.0.0.1:8081/members"
    assert data["events"][-1]["result"] == "failed"


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (512, "512 B"), (50 * 2**20, "50 MiB"), (int(1.5 * 2**30), "1.5 GiB"), (2**40, "1024 GiB")],
)
def test_human_bytes(value, text):
    assert ts.human_bytes(value) == text


def test_default_stack_comes_from_the_environment_then_the_inventory(tmp_path, monkeypatch):
    monkeypatch.delenv("TENFOLD_STACK", raising=False)
    assert ts.default_stack(tmp_path) == "tenfold"
    inventory = tmp_path / "inventories/local/group_vars"
    inventory.mkdir(parents=True)
    (inventory / "all.yml").write_text("tenfold_stack: blue\n")
    assert ts.default_stack(tmp_path) == "blue"
    monkeypatch.setenv("TENFOLD_STACK", "green")
    assert ts.default_stack(tmp_path) == "green"


def test_a_stack_on_several_docker_hosts_shows_each_replicas_host_and_the_hosts_not_read():
    replicas = [replace(r, host=f"app{r.index % 2 + 1}") for r in sample_status().replicas]
    status = replace(
        sample_status(),
        replicas=replicas,
        docker_hosts=["app1", "app2", "app3"],
        unreachable_hosts={"app3": "ssh: connect to host 10.0.1.13 port 22: Connection timed out"},
    )
    lines = ts.render_table(status).splitlines()
    assert lines[2] == (
        "! Docker host app3 did not answer, its replicas are not shown: "
        "ssh: connect to host 10.0.1.13 port 22: Connection timed out"
    )
    header = next(line for line in lines if line.startswith("REPLICA"))
    assert header.split()[:3] == ["REPLICA", "HOST", "STATE"]
    row = next(line for line in lines if line.startswith("tenfold-backend-1 "))
    assert row.split()[:3] == ["tenfold-backend-1", "app2", "running"]
    assert row.split()[-2:] == ["active", "2"]
    assert json.loads(ts.render_json(status))["unreachable_hosts"] == {
        "app3": status.unreachable_hosts["app3"]
    }


def test_the_docker_hosts_come_from_the_monitors_settings_when_the_role_rendered_them(tmp_path):
    assert [h.name for h in ts.monitor_settings(None, "tenfold", tmp_path).engine_hosts()] == ["local"]
    (tmp_path / "logs").mkdir()
    rendered = {"stack": "tenfold", "docker_hosts": [{"name": "app1", "url": "ssh://root@10.0.1.11"}]}
    (tmp_path / "logs" / "monitor-tenfold.json").write_text(json.dumps(rendered))
    hosts = ts.monitor_settings(None, "tenfold", tmp_path).engine_hosts()
    assert [(h.name, h.url) for h in hosts] == [("app1", "ssh://root@10.0.1.11")]
    (tmp_path / "bad.json").write_text(json.dumps({"docker_hosts": [{"url": "ssh://x"}]}))
    with pytest.raises(ts.SettingsError, match="docker_hosts"):
        ts.monitor_settings(tmp_path / "bad.json", "tenfold", tmp_path)
