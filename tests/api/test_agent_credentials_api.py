"""Agent credentials through the app, on SQLite and PostgreSQL: join tokens (create, list, revoke,
limits) and what a join token or an agent token can reach. The takeover test is the escape test for
issue 9's "a join token takes over a live host"."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from coldplate.clock import FakeClock
from coldplate.db.tables import Instance
from coldplate.services import agent_tasks
from coldplate.state import AppState
from tests.conftest import Fleet, auth

PROBLEM = "application/problem+json"


def body(name: str, join_token: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "region": "eu", "gpu": {"model": "H100", "count": 8}, "vcpus": 64, "memory_gb": 512,
        "disk_gb": 1000, "port_range": [25000, 25099], "prices": {"gpu_per_hour": "2", "spot_gpu_per_hour": "1"}}
    if join_token is not None:
        data["join_token"] = join_token
    return data


def register(client: TestClient, name: str, join_token: str | None, bearer: str | None = None) -> Any:
    headers = auth(bearer) if bearer else {"Authorization": ""}
    return client.post("/v1/agent/register", json=body(name, join_token), headers=headers)


def problem(response: Any, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code
    if param is not None:
        assert response.json()["param"] == param


def test_join_token_cannot_take_over_a_live_host(client: TestClient, fleet: Fleet, project_key: str,
                                                 state: AppState) -> None:
    """Register with its name, then poll its assignments, forge a `failed` transition and answer its
    task with a host of our own: each fails, and the real agent's token keeps working."""
    victim = fleet.host("victim")
    inst = client.post("/v1/instances", headers=auth(project_key), json={
        "name": "secret-box", "gpu": "h100", "env": {"DB_PASSWORD": "hunter2"}}).json()
    assert fleet.report(victim, inst["id"], "starting").status_code == 200
    with state.tx() as session:
        task = agent_tasks.create(session, clock=state.clock, inst=session.get(Instance, inst["id"]),  # type: ignore[arg-type]
                                  kind="logs", params={"tail": 5}, need_running=False)

    takeover = register(client, "victim", fleet.join_token)
    problem(takeover, 403, "forbidden", "name")
    assert "agent_token" not in takeover.json() and "hunter2" not in takeover.text

    # the attacker's own, legitimately joined host sees and touches nothing of the victim's
    attacker = register(client, "attacker", fleet.join_token).json()["agent_token"]
    seen = client.get("/v1/agent/assignments", params={"wait": 0}, headers=auth(attacker))
    assert seen.status_code == 200 and seen.json()["assignments"] == [] and seen.json()["tasks"] == []
    assert "hunter2" not in seen.text
    forged = client.post(f"/v1/agent/instances/{inst['id']}/transition", headers=auth(attacker),
                         json={"status": "failed", "failure_reason": "forged"})
    problem(forged, 404, "not_found", "instance_id")
    answered = client.post(f"/v1/agent/tasks/{task.id}/result", headers=auth(attacker), json={"lines": ["forged"]})
    problem(answered, 404, "not_found", "task_id")
    client.post("/v1/agent/heartbeat", headers=auth(attacker),
                json={"metrics": [{"instance_id": inst["id"], "values": {"gpu_util_pct": 1.0}}]})
    assert client.get(f"/v1/instances/{inst['id']}/metrics", headers=auth(project_key)).json()["data"] == []

    # nothing changed, and the real agent still holds its host
    assert client.get(f"/v1/instances/{inst['id']}", headers=auth(project_key)).json()["status"] == "starting"
    mine = fleet.assignments(victim)
    assert [a["instance_id"] for a in mine["assignments"]] == [inst["id"]]
    assert mine["assignments"][0]["env"] == {"DB_PASSWORD": "hunter2"}
    assert [t["id"] for t in mine["tasks"]] == [task.id]
    assert fleet.report(victim, inst["id"], "ready").status_code == 200
    assert fleet.heartbeat(victim).status_code == 200


def test_restarted_agent_re_registers_with_its_token_and_an_admin_can_replace_it(client: TestClient,
                                                                                 fleet: Fleet) -> None:
    host = fleet.host("gpu-01")
    token = fleet.tokens[host]
    again = register(client, "gpu-01", None, bearer=token)
    assert again.status_code == 201
    assert (again.json()["hostnode_id"], again.json()["agent_token"]) == (host, token)
    replaced = register(client, "gpu-01", None, bearer=client.headers["Authorization"].removeprefix("Bearer "))
    assert replaced.status_code == 201 and replaced.json()["hostnode_id"] == host
    problem(client.post("/v1/agent/heartbeat", json={}, headers=auth(token)), 401, "unauthorized")
    assert client.post("/v1/agent/heartbeat", json={}, headers=auth(replaced.json()["agent_token"])).status_code == 200
    problem(register(client, "gpu-02", None), 401, "unauthorized", "join_token")


def test_join_tokens_list_without_secret_count_uses_and_revoke(client: TestClient, project_key: str) -> None:
    created = client.post("/v1/join-tokens", json={"name": "rack-7", "max_uses": 2, "expires_in_hours": 24})
    assert created.status_code == 201, created.text
    token = created.json()
    assert token["token"].startswith("cpj_") and token["uses"] == 0 and token["max_uses"] == 2
    assert token["expires_at"] == "2026-01-02T00:00:00Z" and token["state"] == "active"
    assert register(client, "a", token["token"]).status_code == 201
    listed = client.get("/v1/join-tokens").json()["data"]
    assert [t["id"] for t in listed] == [token["id"]]
    assert "token" not in listed[0] and token["token"] not in client.get("/v1/join-tokens").text
    assert listed[0]["uses"] == 1
    assert register(client, "b", token["token"]).status_code == 201
    problem(register(client, "c", token["token"]), 401, "join_token_used_up", "join_token")
    assert client.get(f"/v1/join-tokens/{token['id']}").json()["state"] == "used_up"

    other = client.post("/v1/join-tokens", json={}).json()
    assert other["max_uses"] is None and other["expires_at"] is None
    assert client.delete(f"/v1/join-tokens/{other['id']}").status_code == 204
    assert client.delete(f"/v1/join-tokens/{other['id']}").status_code == 204
    revoked = client.get(f"/v1/join-tokens/{other['id']}").json()
    assert revoked["state"] == "revoked" and revoked["revoked_at"] == "2026-01-01T00:00:00Z"
    problem(register(client, "d", other["token"]), 401, "join_token_revoked", "join_token")
    problem(client.delete("/v1/join-tokens/jt_nope"), 404, "not_found", "token_id")
    problem(client.get("/v1/join-tokens/jt_nope"), 404, "not_found", "token_id")
    for response in (client.get("/v1/join-tokens", headers=auth(project_key)),
                     client.post("/v1/join-tokens", json={}, headers=auth(project_key)),
                     client.delete(f"/v1/join-tokens/{token['id']}", headers=auth(project_key))):
        problem(response, 403, "forbidden_scope")


def test_expired_join_token_is_refused(client: TestClient, clock: FakeClock) -> None:
    token = client.post("/v1/join-tokens", json={"expires_at": "2026-01-01T01:00:00+00:00"}).json()
    assert token["expires_at"] == "2026-01-01T01:00:00Z"
    clock.advance(3600)
    assert client.get(f"/v1/join-tokens/{token['id']}").json()["state"] == "expired"
    problem(register(client, "late", token["token"]), 401, "join_token_expired", "join_token")


def test_join_token_bad_input_names_the_field(client: TestClient) -> None:
    cases = [({"expires_in_hours": 1, "expires_at": "2026-02-01T00:00:00Z"}, "expires_in_hours"),
             ({"expires_in_hours": 0}, "expires_in_hours"), ({"expires_in_hours": "soon"}, "expires_in_hours"),
             ({"expires_at": "2025-12-31T00:00:00Z"}, "expires_at"),
             ({"expires_at": "2026-02-01T00:00:00"}, "expires_at"),  # no timezone
             ({"max_uses": 0}, "max_uses"), ({"max_uses": 1.5}, "max_uses"), ({"secret": "x"}, "secret")]
    for payload, param in cases:
        problem(client.post("/v1/join-tokens", json=payload), 422, "validation_error", param)
    assert client.get("/v1/join-tokens").json()["data"] == []
