"""The lifecycle rules of domain/lifecycle.py as the API applies them, on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from coldplate.clock import FakeClock
from coldplate.loops import hosts as hosts_loop
from coldplate.state import AppState
from tests.conftest import Fleet, auth


def _ready(client: TestClient, fleet: Fleet, key: str, host: str, name: str) -> str:
    response = client.post("/v1/instances", json={"name": name, "gpu": "h100"}, headers=auth(key))
    assert response.status_code == 201, response.text
    iid = str(response.json()["id"])
    assert fleet.report(host, iid, "starting").status_code == 200
    assert fleet.report(host, iid, "ready").status_code == 200
    return iid


def test_terminating_a_draining_instance_writes_an_event_and_reaches_the_agent(client: TestClient, fleet: Fleet,
                                                                                project_key: str) -> None:
    host = fleet.host("h1")
    iid = _ready(client, fleet, project_key, host, "a")
    assert client.post(f"/v1/instances/{iid}/stop", headers=auth(project_key)).status_code == 200
    version = fleet.assignments(host)["version"]
    terminated = client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key))
    assert terminated.status_code == 200 and terminated.json()["status"] == "draining"
    events = client.get(f"/v1/instances/{iid}/events", headers=auth(project_key)).json()["data"]
    assert events[-1]["type"] == "instance.desired_changed"
    assert events[-1]["data"] == {"status": "draining", "desired": "terminated"}
    assert events[-1]["from_status"] is None and events[-1]["to_status"] is None  # no status change
    work = fleet.assignments(host, since=version)
    assert work["version"] > version and work["assignments"][0]["desired"] == "terminated"
    assert fleet.report(host, iid, "stopped").status_code == 200  # the agent had begun a stop: it terminates
    assert client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()["status"] == "terminated"


def test_a_failure_after_an_acknowledged_terminate_ends_terminated_with_the_failure_recorded(
        client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    iid = _ready(client, fleet, project_key, host, "a")
    assert client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key)).status_code == 200
    assert fleet.report(host, iid, "failed", failure_reason="oom while stopping").status_code == 200
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert (inst["status"], inst["status_reason"]) == ("terminated", "user")
    assert inst["failure_reason"] == "oom while stopping"
    assert client.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 8


def test_host_loss_after_an_acknowledged_terminate_ends_terminated(client: TestClient, fleet: Fleet,
                                                                   project_key: str, clock: FakeClock,
                                                                   state: AppState) -> None:
    host = fleet.host("h1", heartbeat_timeout_seconds=30)
    iid = _ready(client, fleet, project_key, host, "a")
    assert client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key)).status_code == 200
    clock.advance(31)
    hosts_loop.run_once(state)
    clock.advance(121)
    hosts_loop.run_once(state)
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert inst["status"] == "terminated" and inst["failure_reason"]


def test_an_admin_cannot_bring_an_offline_host_online(client: TestClient, fleet: Fleet, clock: FakeClock,
                                                      state: AppState) -> None:
    host = fleet.host("h1", heartbeat_timeout_seconds=30)
    clock.advance(31)
    hosts_loop.run_once(state)
    refused = client.patch(f"/v1/hostnodes/{host}", json={"status": "online"})
    assert refused.status_code == 409 and refused.json()["param"] == "status"
    assert "heartbeat" in refused.json()["detail"]
    assert client.patch(f"/v1/hostnodes/{host}", json={"status": "maintenance"}).status_code == 200
    assert client.patch(f"/v1/hostnodes/{host}", json={"status": "online"}).status_code == 200
    fleet.heartbeat(host)
    assert client.get(f"/v1/hostnodes/{host}").json()["status"] == "online"
