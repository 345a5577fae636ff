"""The native API through the app, on SQLite and PostgreSQL, with a test acting as the agent."""

from __future__ import annotations

from fastapi.testclient import TestClient

from coldplate.clock import FakeClock
from coldplate.loops import hosts as hosts_loop
from coldplate.loops import timers
from coldplate.state import AppState
from tests.conftest import Fleet, auth

PROBLEM = "application/problem+json"


def create(client: TestClient, key: str, **body: object) -> dict[str, object]:
    body.setdefault("name", "train-1")
    body.setdefault("gpu", "h100")
    response = client.post("/v1/instances", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def test_create_places_on_cheapest_host_and_locks_price(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("dear", price="3.00")
    cheap = fleet.host("cheap", price="2.20")
    fleet.host("other-region", price="1.00", region="na")
    inst = create(client, project_key, gpu="NVIDIA H100 80GB HBM3", gpu_count=2, region="europe")
    assert inst["status"] == "provisioning"
    assert inst["hostnode_id"] == cheap
    assert inst["region"] == "eu"
    assert inst["gpu"] == {"type": "h100-80gb", "name": "NVIDIA H100 80GB", "count": 2}
    assert inst["gpu_indices"] == [0, 1]
    assert inst["price_per_hour"] == "4.400000"
    assert inst["created_at"].endswith("Z")  # type: ignore[union-attr]
    host = client.get(f"/v1/hostnodes/{cheap}").json()
    assert host["gpus_free"] == 6


def test_full_lifecycle_and_events(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    inst = create(client, project_key, ports=[{"internal_port": 8080}])
    iid = inst["id"]
    assigned = fleet.assignments(host)["assignments"]
    assert [a["instance_id"] for a in assigned] == [iid]
    assert assigned[0]["desired"] == "running"
    assert fleet.report(host, iid, "starting").status_code == 200  # type: ignore[arg-type]
    assert fleet.report(host, iid, "ready").status_code == 200  # type: ignore[arg-type]
    ready = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert ready["status"] == "ready" and ready["ip"] == "127.0.0.1"
    assert ready["ssh_command"] == f"ssh root@127.0.0.1 -p {ready['ssh_port']}"
    assert ready["ports"][0]["internal_port"] == 8080

    stopped = client.post(f"/v1/instances/{iid}/stop", headers=auth(project_key)).json()
    assert stopped["status"] == "draining"
    assert fleet.assignments(host)["assignments"][0]["desired"] == "stopped"
    fleet.report(host, iid, "stopped")  # type: ignore[arg-type]
    assert client.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 8  # GPUs released while stopped
    started = client.post("/v1/instances/train-1/start", headers=auth(project_key)).json()
    assert started["status"] == "provisioning"
    fleet.report(host, iid, "starting")  # type: ignore[arg-type]
    fleet.report(host, iid, "ready")  # type: ignore[arg-type]
    client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key), json={"force": True})
    fleet.report(host, iid, "terminated")  # type: ignore[arg-type]
    final = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert final["status"] == "terminated" and final["terminated_at"] is not None
    events = client.get(f"/v1/instances/{iid}/events", headers=auth(project_key)).json()["data"]
    assert [e["to_status"] for e in events] == [
        "provisioning", "starting", "ready", "draining", "stopped", "provisioning", "starting", "ready",
        "draining", "terminated"]
    host_view = client.get(f"/v1/hostnodes/{host}").json()
    assert host_view["gpus_free"] == 8 and host_view["ports_free"] == 100


def test_ready_reported_while_provisioning_records_starting_too(client: TestClient, fleet: Fleet,
                                                               project_key: str) -> None:
    """An agent whose start finished at once says `ready` without `starting` first: the server takes
    both steps of the lifecycle table, each with its event (before: 409, the instance stayed put)."""
    host = fleet.host("h1")
    iid = create(client, project_key)["id"]
    answer = fleet.report(host, iid, "ready")  # type: ignore[arg-type]
    assert answer.status_code == 200 and answer.json()["status"] == "ready"
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert inst["status"] == "ready" and inst["ready_at"] is not None and inst["ip"] == "127.0.0.1"
    events = client.get(f"/v1/instances/{iid}/events", headers=auth(project_key)).json()["data"]
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        (None, "provisioning"), ("provisioning", "starting"), ("starting", "ready")]
    assert fleet.report(host, iid, "ready").status_code == 200  # type: ignore[arg-type]  # a retry: no-op
    assert len(client.get(f"/v1/instances/{iid}/events", headers=auth(project_key)).json()["data"]) == 3


def test_restart_goes_through_stopped_and_back(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    iid = create(client, project_key)["id"]
    for status in ("starting", "ready"):
        fleet.report(host, iid, status)  # type: ignore[arg-type]
    assert client.post(f"/v1/instances/{iid}/restart", headers=auth(project_key)).json()["status"] == "draining"
    fleet.report(host, iid, "stopped")  # type: ignore[arg-type]
    assert client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()["status"] == "provisioning"


def test_invalid_action_is_409_invalid_state(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1")
    iid = create(client, project_key)["id"]
    response = client.post(f"/v1/instances/{iid}/start", headers=auth(project_key))
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "invalid_state"


def test_agent_transition_outside_table_is_rejected(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    iid = create(client, project_key)["id"]
    response = fleet.report(host, iid, "stopped")  # type: ignore[arg-type]
    assert response.status_code == 409 and response.json()["code"] == "invalid_state"


def test_projects_are_isolated(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1")
    iid = create(client, project_key)["id"]
    other = client.post("/v1/projects", json={"name": "team-b"}).json()
    other_key = client.post(f"/v1/projects/{other['id']}/keys", json={"name": "k"}).json()["key"]
    assert client.get(f"/v1/instances/{iid}", headers=auth(other_key)).status_code == 404
    assert client.get("/v1/instances", headers=auth(other_key)).json()["data"] == []
    assert client.post(f"/v1/instances/{iid}/stop", headers=auth(other_key)).status_code == 404
    # a project key is not an admin key
    denied = client.post("/v1/projects", json={"name": "x"}, headers=auth(other_key))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden_scope"


def test_auth_errors(client: TestClient) -> None:
    assert client.get("/v1/instances", headers={"Authorization": ""}).status_code == 401
    response = client.get("/v1/instances", headers=auth("cp_nope"))
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"


def test_scopes_are_enforced(client: TestClient, fleet: Fleet) -> None:
    project = client.post("/v1/projects", json={"name": "ro"}).json()
    key = client.post(f"/v1/projects/{project['id']}/keys",
                      json={"name": "ro", "scopes": ["instances:read"]}).json()["key"]
    response = client.post("/v1/instances", json={"name": "a", "gpu": "h100"}, headers=auth(key))
    assert response.status_code == 403 and response.json()["code"] == "forbidden_scope"
    bad = client.post(f"/v1/projects/{project['id']}/keys", json={"name": "x", "scopes": ["admin"]})
    assert bad.status_code == 422 and bad.json()["param"] == "scopes"


def test_validation_errors_name_the_field(client: TestClient, project_key: str) -> None:
    cases = [
        ({"name": "Bad_Name", "gpu": "h100"}, "name"),
        ({"name": "ok", "gpu": "h100", "gpu_count": -1}, "gpu_count"),
        ({"name": "ok", "gpu": "h100", "duration_hours": 169}, "duration_hours"),
        ({"name": "ok", "gpu": "h100", "ssh_keys": ["not a key"]}, "ssh_keys"),
        ({"name": "ok", "gpu": "h100", "ports": [{"internal_port": 70000}]}, "ports.0.internal_port"),
        ({"name": "ok", "gpu": "h100", "surprise": 1}, "surprise"),
        ({"name": "ok", "gpu": "voodoo"}, "gpu"),
        ({"name": "ok", "gpu": "h100", "region": "mars"}, "region"),
        ({"name": "ok", "gpu": "h100", "max_price_per_hour": "-1"}, "max_price_per_hour"),
    ]
    for body, field in cases:
        response = client.post("/v1/instances", json=body, headers=auth(project_key))
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["code"] == "validation_error" and problem["param"] == field, (body, problem)
    broken = client.post("/v1/instances", content=b"{not json", headers={**auth(project_key),
                                                                          "content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["code"] == "validation_error"


def test_no_capacity_names_alternatives(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1", count=2)
    fleet.host("a100s", gpu="A100", count=4, region="na")
    response = client.post("/v1/instances", json={"name": "big", "gpu": "h100", "gpu_count": 4},
                           headers=auth(project_key))
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "no_capacity"
    assert "2x h100-80gb in eu" in problem["detail"] and "4x a100-80gb in na" in problem["detail"]
    # GPUs free but not the vCPUs the request asks for: the detail says so instead of listing the GPUs
    cpus = client.post("/v1/instances", json={"name": "cpu-heavy", "gpu": "h100", "vcpus": 500},
                       headers=auth(project_key))
    assert cpus.status_code == 409
    assert cpus.json()["detail"] == ("no capacity for 1x h100-80gb: the hosts with those GPUs free lack "
                                     "vCPUs (500 asked, 32 free)")
    fleet.host("cpu-only", gpu="cpu", count=0)
    cpu = client.post("/v1/instances", json={"name": "cpu-heavy", "gpu": "cpu", "vcpus": 100},
                      headers=auth(project_key))
    assert cpu.json()["detail"] == ("no capacity for a cpu instance: the hosts that could take it lack "
                                    "vCPUs (100 asked, 16 free)")


def test_max_price_filters_hosts(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("dear", price="3.00")
    response = client.post("/v1/instances", json={"name": "a", "gpu": "h100", "max_price_per_hour": "2.50"},
                           headers=auth(project_key))
    assert response.status_code == 409 and response.json()["code"] == "no_capacity"
    spot = create(client, project_key, name="b", spot=True, max_price_per_hour="2.50")
    assert spot["price_per_hour"] == "1.000000" and spot["spot"] is True


def test_names_unique_among_live_instances(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    iid = create(client, project_key, name="dup")["id"]
    again = client.post("/v1/instances", json={"name": "dup", "gpu": "h100"}, headers=auth(project_key))
    assert again.status_code == 409 and again.json()["code"] == "name_taken"
    client.post(f"/v1/instances/{iid}/terminate", headers=auth(project_key))
    assert client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()["status"] == "draining"
    fleet.report(host, iid, "terminated")  # type: ignore[arg-type]
    create(client, project_key, name="dup")


def test_idempotency_key(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1")
    headers = {**auth(project_key), "Idempotency-Key": "abc"}
    first = client.post("/v1/instances", json={"name": "idem", "gpu": "h100"}, headers=headers)
    second = client.post("/v1/instances", json={"name": "idem", "gpu": "h100"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert len(client.get("/v1/instances", headers=auth(project_key)).json()["data"]) == 1
    conflict = client.post("/v1/instances", json={"name": "other", "gpu": "h100"}, headers=headers)
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"


def test_list_filter_and_paginate(client: TestClient, fleet: Fleet, project_key: str, clock: FakeClock) -> None:
    host = fleet.host("h1")
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append(create(client, project_key, name=f"n{i}", labels={"team": "a" if i % 2 else "b"})["id"])
    fleet.report(host, ids[0], "starting")  # type: ignore[arg-type]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/instances", params=params, headers=auth(project_key)).json()
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    starting = client.get("/v1/instances", params={"status": "starting,ready"}, headers=auth(project_key)).json()
    assert [i["id"] for i in starting["data"]] == [ids[0]]
    team_a = client.get("/v1/instances", params={"label": "team=a"}, headers=auth(project_key)).json()
    assert sorted(i["id"] for i in team_a["data"]) == sorted([ids[1], ids[3]])
    bad = client.get("/v1/instances", params={"status": "sleeping"}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.json()["param"] == "status"
    assert client.get("/v1/instances", params={"cursor": "zzz"}, headers=auth(project_key)).status_code == 422


def test_patch_name_and_labels(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1")
    iid = create(client, project_key)["id"]
    patched = client.patch(f"/v1/instances/{iid}", json={"name": "renamed", "labels": {"x": "y"}},
                           headers=auth(project_key)).json()
    assert patched["name"] == "renamed" and patched["labels"] == {"x": "y"}
    assert client.get("/v1/instances/renamed", headers=auth(project_key)).json()["id"] == iid


def test_duration_expires_on_time(client: TestClient, fleet: Fleet, project_key: str, clock: FakeClock,
                                  state: AppState) -> None:
    host = fleet.host("h1")
    iid = create(client, project_key, duration_hours=2)["id"]
    for status in ("starting", "ready"):
        fleet.report(host, iid, status)  # type: ignore[arg-type]
    clock.advance(2 * 3600 - 1)
    assert timers.run_once(state) == 0
    clock.advance(1)
    assert timers.run_once(state) == 1
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert inst["status"] == "draining" and inst["status_reason"] == "expired"
    assert fleet.assignments(host)["assignments"][0]["desired"] == "terminated"
    fleet.report(host, iid, "stopped")  # type: ignore[arg-type]  # agent stopped it: terminate follows
    assert client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()["status"] == "terminated"


def test_silent_host_goes_offline_then_instances_fail(client: TestClient, fleet: Fleet, project_key: str,
                                                     clock: FakeClock, state: AppState) -> None:
    host = fleet.host("h1", heartbeat_timeout_seconds=30)
    iid = create(client, project_key)["id"]
    clock.advance(31)
    assert hosts_loop.run_once(state) == (1, 0)
    assert client.get(f"/v1/hostnodes/{host}").json()["status"] == "offline"
    # it comes back within the grace period: nothing is lost
    fleet.heartbeat(host)
    assert client.get(f"/v1/hostnodes/{host}").json()["status"] == "online"
    clock.advance(31)
    hosts_loop.run_once(state)
    clock.advance(121)
    assert hosts_loop.run_once(state) == (0, 1)
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert inst["status"] == "failed" and inst["status_reason"] == "host_lost"
    assert client.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 8


def test_drained_host_takes_no_new_instances(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    patched = client.patch(f"/v1/hostnodes/{host}", json={"status": "draining", "prices": {"gpu_per_hour": "1.5"}})
    assert patched.status_code == 200 and patched.json()["prices"]["gpu_per_hour"] == "1.500000"
    response = client.post("/v1/instances", json={"name": "a", "gpu": "h100"}, headers=auth(project_key))
    assert response.json()["code"] == "no_capacity"
    bad = client.patch(f"/v1/hostnodes/{host}", json={"status": "exploded"})
    assert bad.status_code == 422 and bad.json()["param"] == "status"


def test_catalog_offers_and_regions(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1", price="2.50")
    fleet.host("h2", price="2.10", region="apac")
    fleet.host("l", gpu="L40S", count=4, price="0.90")
    offers = client.get("/v1/offers", params={"gpu": "H100", "gpu_count": 2}, headers=auth(project_key)).json()
    assert [o["hostnode_name"] for o in offers["data"]] == ["h2", "h1"]
    assert offers["data"][0]["price_per_hour"] == "4.200000"
    types = {t["slug"]: t for t in client.get("/v1/gpu-types", headers=auth(project_key)).json()["data"]}
    assert {a["region"] for a in types["h100-80gb"]["availability"]} == {"eu", "apac"}
    assert types["l40s-48gb"]["availability"][0]["gpus_free"] == 4
    regions = client.get("/v1/regions", headers=auth(project_key)).json()["data"]
    assert [r["slug"] for r in regions] == ["na", "eu", "apac"]
    bad = client.get("/v1/offers", params={"gpu": "nope"}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.json()["param"] == "gpu"
    first = client.get("/v1/offers", params={"gpu": "H100", "gpu_count": 2, "limit": 1}, headers=auth(project_key))
    assert [o["hostnode_name"] for o in first.json()["data"]] == ["h2"]  # the best one
    for limit in (0, 101):
        bad = client.get("/v1/offers", params={"gpu": "H100", "limit": limit}, headers=auth(project_key))
        assert bad.status_code == 422 and bad.json()["param"] == "limit"


def test_wait_returns_when_ready_and_times_out(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    iid = create(client, project_key)["id"]
    timeout = client.get(f"/v1/instances/{iid}/wait", params={"timeout": 0.2}, headers=auth(project_key))
    assert timeout.status_code == 408 and timeout.json()["code"] == "wait_timeout"
    fleet.report(host, iid, "starting")  # type: ignore[arg-type]
    fleet.report(host, iid, "ready")  # type: ignore[arg-type]
    ready = client.get(f"/v1/instances/{iid}/wait", params={"timeout": 5}, headers=auth(project_key))
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_unknown_routes_are_problems(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    assert client.get("/v1/instances/inst_missing").json()["code"] == "not_found"


def test_ssh_key_ids_resolve_to_stored_keys(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk8a4d0 user@laptop"
    bad = client.post("/v1/ssh-keys", json={"name": "x", "public_key": "hello"}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.json()["param"] == "public_key"
    key = client.post("/v1/ssh-keys", json={"name": "laptop", "public_key": public}, headers=auth(project_key))
    assert key.status_code == 201
    inst = create(client, project_key, ssh_key_ids=[key.json()["id"]])
    assert fleet.assignments(host)["assignments"][0]["ssh_keys"] == [public]
    assert inst["status"] == "provisioning"
    unknown = client.post("/v1/instances", json={"name": "b", "gpu": "h100", "ssh_key_ids": ["sshkey_nope"]},
                          headers=auth(project_key))
    assert unknown.status_code == 422 and unknown.json()["param"] == "ssh_key_ids.0"
    listed = client.get("/v1/ssh-keys", headers=auth(project_key)).json()["data"]
    assert [k["name"] for k in listed] == ["laptop"]
    assert client.delete(f"/v1/ssh-keys/{key.json()['id']}", headers=auth(project_key)).status_code == 204
    assert client.delete(f"/v1/ssh-keys/{key.json()['id']}", headers=auth(project_key)).status_code == 404


def test_exec_needs_a_ready_instance_and_valid_input(client: TestClient, fleet: Fleet, project_key: str) -> None:
    fleet.host("h1")
    iid = create(client, project_key)["id"]
    busy = client.post(f"/v1/instances/{iid}/exec", json={"cmd": "true"}, headers=auth(project_key))
    assert busy.status_code == 409 and busy.json()["code"] == "invalid_state"
    bad = client.post(f"/v1/instances/{iid}/exec", json={"cmd": "true", "timeout": 0}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.json()["param"] == "timeout"
    empty = client.post(f"/v1/instances/{iid}/exec", json={"cmd": []}, headers=auth(project_key))
    assert empty.status_code == 422 and empty.json()["param"] == "cmd"


def test_agent_tasks_are_carried_and_expire(client: TestClient, fleet: Fleet, project_key: str, clock: FakeClock,
                                            state: AppState) -> None:
    """A logs request becomes a task in the host's assignments; the agent's result answers it."""
    import threading

    from coldplate.loops import retention

    host = fleet.host("h1")
    iid = create(client, project_key)["id"]
    answer: dict[str, object] = {}

    def request_logs() -> None:
        response = client.get(f"/v1/instances/{iid}/logs", params={"tail": 2}, headers=auth(project_key))
        answer["status"], answer["text"] = response.status_code, response.text

    requester = threading.Thread(target=request_logs)
    requester.start()
    tasks: list[dict[str, object]] = []
    for _ in range(100):
        tasks = fleet.assignments(host)["tasks"]
        if tasks:
            break
        threading.Event().wait(0.05)
    assert tasks and tasks[0]["kind"] == "logs" and tasks[0]["params"] == {"tail": 2}
    posted = client.post(f"/v1/agent/tasks/{tasks[0]['id']}/result", json={"lines": ["a", "b"], "cursor": "9"},
                         headers=auth(fleet.tokens[host]))
    assert posted.status_code == 200
    requester.join(timeout=10)
    assert answer == {"status": 200, "text": "a\nb\n"}
    assert fleet.assignments(host)["tasks"] == []  # answered tasks are no longer handed out
    clock.advance(3601)
    assert retention.run_once(state) == 1


def test_heartbeat_metrics_are_stored_per_instance(client: TestClient, fleet: Fleet, project_key: str,
                                                   clock: FakeClock, state: AppState) -> None:
    from coldplate.loops import retention

    host, other = fleet.host("h1"), fleet.host("h2", price="9.00")
    iid = create(client, project_key)["id"]
    for util in (10.0, 90.0):
        clock.advance(5)
        response = client.post("/v1/agent/heartbeat", headers=auth(fleet.tokens[host]), json={
            "metrics": [{"instance_id": iid, "values": {"gpu_util_pct": util, "cpu_pct": 1.5}}]})
        assert response.status_code == 200
    # another host cannot write samples for this instance
    client.post("/v1/agent/heartbeat", headers=auth(fleet.tokens[other]),
                json={"metrics": [{"instance_id": iid, "values": {"gpu_util_pct": 55.0}}]})
    series = client.get(f"/v1/instances/{iid}/metrics", headers=auth(project_key)).json()["data"]
    assert [s["gpu_util_pct"] for s in series] == [10.0, 90.0]
    later = client.get(f"/v1/instances/{iid}/metrics", params={"since": series[0]["at"]},
                       headers=auth(project_key)).json()["data"]
    assert [s["gpu_util_pct"] for s in later] == [90.0]
    bad = client.post("/v1/agent/heartbeat", headers=auth(fleet.tokens[host]),
                      json={"metrics": [{"instance_id": iid, "values": {"gpu_util_pct": "lots"}}]})
    assert bad.status_code == 422 and bad.json()["param"].startswith("metrics.0.values")
    clock.advance(24 * 3600 + 60)
    retention.run_once(state)
    assert client.get(f"/v1/instances/{iid}/metrics", headers=auth(project_key)).json()["data"] == []


def test_volumes_and_cloud_init_validation_names_the_field(client: TestClient, fleet: Fleet,
                                                           project_key: str) -> None:
    fleet.host("h1")
    cases = [
        ({"volumes": [{"name": "data", "mount_path": "relative"}]}, "volumes.0.mount_path"),
        ({"volumes": [{"name": "data", "mount_path": "/workspace"}]}, "volumes.0.mount_path"),
        ({"volumes": [{"name": "data", "mount_path": "/proc/x"}]}, "volumes.0.mount_path"),
        ({"volumes": [{"name": "Data!", "mount_path": "/data"}]}, "volumes.0.name"),
        ({"volumes": [{"name": "a", "mount_path": "/data"}, {"name": "b", "mount_path": "/data/"}]}, "volumes"),
        ({"cloud_init": {"runcmd": "echo not a list"}}, "cloud_init.runcmd"),
        ({"cloud_init": {"users": []}}, "cloud_init.users"),
        ({"cloud_init": {"packages": ["curl; rm -rf /"]}}, "cloud_init.packages"),
        ({"cloud_init": {"packages": [["jq"]]}}, "cloud_init.packages"),
        ({"cloud_init": {"runcmd": ["ls", []]}}, "cloud_init.runcmd"),
        ({"cloud_init": {"runcmd": [3]}}, "cloud_init.runcmd"),
        ({"cloud_init": {"write_files": [{"path": "etc/x"}]}}, "cloud_init.write_files.0.path"),
        ({"cloud_init": {"write_files": [{"path": "/x", "permissions": "999"}]}},
         "cloud_init.write_files.0.permissions"),
        ({"cloud_init": {"write_files": [{"path": "/x", "content": "%%%", "encoding": "b64"}]}},
         "cloud_init.write_files.0"),
        ({"cloud_init": "runcmd: [ls]"}, "cloud_init"),
        ({"cloud_init": "#cloud-config\nruncmd: [ls"}, "cloud_init"),
    ]
    for extra, field in cases:
        response = client.post("/v1/instances", json={"name": "ok", "gpu": "h100", **extra},
                               headers=auth(project_key))
        assert response.status_code == 422, (extra, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["param"] == field, (extra, response.json())


def test_volumes_and_cloud_init_reach_the_agent(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    yaml_config = "#cloud-config\npackage_update: true\nruncmd:\n  - echo hi\n  - [touch, /tmp/x]\n"
    inst = create(client, project_key, volumes=[{"name": "data", "mount_path": "/data/", "readonly": True}],
                  cloud_init=yaml_config)
    assert inst["volumes"] == [{"name": "data", "mount_path": "/data", "readonly": True}]
    assert inst["cloud_init"] == {"package_update": True, "runcmd": ["echo hi", ["touch", "/tmp/x"]]}
    [assigned] = fleet.assignments(host)["assignments"]
    assert assigned["project_id"] == inst["project_id"]
    assert assigned["volumes"] == inst["volumes"] and assigned["cloud_init"] == inst["cloud_init"]
    plain = create(client, project_key, name="plain")
    assert plain["volumes"] == [] and plain["cloud_init"] is None


def test_a_workload_that_ends_by_itself_stops_the_instance(client: TestClient, fleet: Fleet,
                                                           project_key: str) -> None:
    host = fleet.host("h1")
    iid = str(create(client, project_key)["id"])
    fleet.report(host, iid, "starting")
    fleet.report(host, iid, "ready")
    assert fleet.report(host, iid, "stopped", exit_code=3, exit_message="exited with code 3").status_code == 200
    inst = client.get(f"/v1/instances/{iid}", headers=auth(project_key)).json()
    assert (inst["status"], inst["status_reason"], inst["exit_code"]) == ("stopped", "exited", 3)
    assert fleet.assignments(host)["assignments"][0]["desired"] == "stopped"  # the agent does not restart it
    assert client.get(f"/v1/hostnodes/{host}").json()["gpus_free"] == 8
    events = client.get(f"/v1/instances/{iid}/events", headers=auth(project_key)).json()["data"]
    assert (events[-1]["from_status"], events[-1]["to_status"], events[-1]["reason"]) == ("ready", "stopped", "exited")
    assert client.post(f"/v1/instances/{iid}/start", headers=auth(project_key)).json()["status"] == "provisioning"
