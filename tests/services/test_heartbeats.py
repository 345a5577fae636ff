"""Heartbeats at scale: the server names the interval, the liveness pass is one query for every
host, and a heartbeat's metric samples are one INSERT."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from coldplate.clock import FakeClock, as_utc
from coldplate.db.tables import Event, MetricSample
from coldplate.loops import hosts as hosts_loop
from coldplate.services import host_loss, hostnodes, join_tokens, metrics
from coldplate.state import AppState
from tests.conftest import Fleet, auth
from tests.hosts import host_info
from tests.statements import Statements


def _hosts(state: AppState, timeouts: list[int]) -> list[str]:
    with state.tx() as session:
        _, join = join_tokens.create(session, clock=state.clock, name="t")
        ids = []
        for i, timeout in enumerate(timeouts):
            spec = host_info(f"h{i}", vcpus=64, memory_gb=512, disk_gb=4000, ports=(20000, 20999),
                             heartbeat_timeout_s=timeout)
            ids.append(hostnodes.register(session, clock=state.clock, join_token=join, spec=spec,
                                          credential=None)[0].id)
        return ids


def test_the_liveness_pass_finds_silent_hosts_with_one_query(state: AppState, clock: FakeClock) -> None:
    ids = _hosts(state, [30, 180] * 150)
    clock.advance(29)
    with state.read() as session:
        assert host_loss.silent_host_ids(session, clock=clock) == []
    clock.advance(2)
    with Statements(state) as statements, state.read() as session:
        silent = host_loss.silent_host_ids(session, clock=clock)
    assert sorted(silent) == sorted(ids[0::2])  # the 30 s hosts, not the 180 s ones
    assert statements.count("SELECT", "hostnodes") == 1  # one query finds them: no host-by-host reads
    assert hosts_loop.run_once(state) == (150, 0)  # then each goes offline in its own transaction
    with state.read() as session:
        statuses = {h.id: h.status for h in hostnodes.list_hostnodes(session)}
        assert all(statuses[i] == "offline" for i in ids[0::2]) and all(statuses[i] == "online" for i in ids[1::2])
        assert all(h.assignment_version == 1 for h in hostnodes.list_hostnodes(session) if h.id in silent)
    clock.advance(150)
    with state.read() as session:
        assert sorted(host_loss.silent_host_ids(session, clock=clock)) == sorted(ids[1::2])


def test_the_server_names_the_heartbeat_interval_and_derives_the_timeout(fleet: Fleet, state: AppState) -> None:
    default = fleet.host("d")
    with state.read() as session:
        assert hostnodes.get_hostnode(session, default).heartbeat_timeout_s == 180  # three missed beats
    answer = fleet.heartbeat(default).json()
    assert answer["heartbeat_interval_seconds"] == 60.0
    short = fleet.host("s", heartbeat_timeout_seconds=30)  # an agent that asks for a shorter timeout
    assert fleet.heartbeat(short).json()["heartbeat_interval_seconds"] == 10.0


def test_a_heartbeats_metric_samples_are_one_insert(client: TestClient, fleet: Fleet, project_key: str,
                                                   state: AppState) -> None:
    host = fleet.host("h")
    ids = [client.post("/v1/instances", json={"name": f"m{i}", "gpu": "H100"}, headers=auth(project_key)).json()["id"]
           for i in range(3)]
    samples = [{"instance_id": i, "values": {"gpu_util_pct": 50.0 + n}} for n, i in enumerate(ids)]
    samples.append({"instance_id": "inst_not_here", "values": {"gpu_util_pct": 1.0}})
    with Statements(state) as statements:
        assert fleet.client.post("/v1/agent/heartbeat", json={"metrics": samples},
                                 headers=auth(fleet.tokens[host])).status_code == 200
    assert statements.count("INSERT", "metric_samples") == 1
    with state.read() as session:
        assert session.scalar(select(func.count()).select_from(MetricSample)) == 3


def test_an_online_hosts_heartbeat_is_one_update_and_an_offline_one_comes_back_with_an_event(
        fleet: Fleet, state: AppState, clock: FakeClock) -> None:
    host = fleet.host("h")
    clock.advance(5)
    with Statements(state) as statements:
        assert fleet.heartbeat(host).json()["status"] == "online"
    assert [s.split()[0].upper() for s in statements.seen if "hostnodes" in s] == ["UPDATE"]  # token checked in it
    with state.read() as session:
        assert as_utc(hostnodes.get_hostnode(session, host).last_heartbeat_at) == clock.now()
    clock.advance(600)
    assert hosts_loop.run_once(state) == (1, 0)
    assert fleet.heartbeat(host).json()["status"] == "online"
    with state.read() as session:
        back = session.scalars(select(Event).where(Event.type == "hostnode.online")).all()
    assert [e.data["hostnode_id"] for e in back] == [host]
    wrong = fleet.client.post("/v1/agent/heartbeat", json={"metrics": []}, headers=auth("cpa_not_a_token"))
    assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"


def test_a_groups_samples_are_one_insert_and_a_sample_for_another_hosts_instance_is_dropped(
        client: TestClient, fleet: Fleet, project_key: str, state: AppState) -> None:
    a, b = fleet.host("a", count=1), fleet.host("b", count=1)
    on = {}
    for name in ("x", "y"):
        inst = client.post("/v1/instances", json={"name": name, "gpu": "H100"}, headers=auth(project_key)).json()
        on[inst["hostnode_id"]] = inst["id"]
    assert set(on) == {a, b}
    samples = [(a, on[a], {"gpu_util_pct": 10.0}), (b, on[b], {"gpu_util_pct": 20.0}),
               (a, on[b], {"gpu_util_pct": 99.0})]  # a claims b's instance
    with Statements(state) as statements, state.tx() as session:
        assert metrics.record(session, clock=state.clock, samples=samples) == 2
    assert statements.count("INSERT", "metric_samples") == 1
    with state.read() as session:
        kept = {(s.instance_id, s.values["gpu_util_pct"]) for s in session.scalars(select(MetricSample))}
    assert kept == {(on[a], 10.0), (on[b], 20.0)}


def test_a_big_groups_samples_stay_within_the_databases_parameter_limits(
        client: TestClient, fleet: Fleet, project_key: str, state: AppState) -> None:
    """A group of heartbeats carries up to 500 × 1,000 samples: one IN list or one INSERT for all of
    them passed SQLite's 32,766 (and PostgreSQL's 65,535) statement parameters, and the whole group,
    everyone's heartbeat, failed."""
    host = fleet.host("h", count=1)
    mine = client.post("/v1/instances", json={"name": "m", "gpu": "H100"}, headers=auth(project_key)).json()["id"]
    samples = [(host, f"inst_elsewhere{i:06d}", {"gpu_util_pct": 1.0}) for i in range(40_000)]
    samples += [(host, mine, {"gpu_util_pct": float(i % 100)}) for i in range(25_000)]
    with Statements(state) as statements, state.tx() as session:
        assert metrics.record(session, clock=state.clock, samples=samples) == 25_000
    assert statements.count("INSERT", "metric_samples") == 25  # in rows of a thousand
    with state.read() as session:
        assert session.scalar(select(func.count()).select_from(MetricSample)) == 25_000
