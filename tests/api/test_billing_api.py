"""Billing through the app (SQLite and PostgreSQL): cost_so_far, budgets, extend, usage, costs, CSV, scopes."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from fastapi.testclient import TestClient

from coldplate.clock import FakeClock
from coldplate.loops import meter
from coldplate.state import AppState
from tests.conftest import Fleet, auth

PROBLEM = "application/problem+json"


def _ready(client: TestClient, fleet: Fleet, host: str, key: str, **body: object) -> dict[str, object]:
    body.setdefault("gpu", "h100")
    response = client.post("/v1/instances", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    inst: dict[str, object] = response.json()
    fleet.report(host, str(inst["id"]), "starting")
    fleet.report(host, str(inst["id"]), "ready")
    return inst


def test_cost_so_far_grows_with_the_clock_and_counts_the_minimum(client: TestClient, fleet: Fleet, project_key: str,
                                                                 clock: FakeClock) -> None:
    host = fleet.host("h1", price="3.60")  # 1,000 µ$ a second
    inst = _ready(client, fleet, host, project_key, name="a", budget_limit="10.00")
    assert inst["cost_so_far"] == "0.000000" and inst["budget_limit"] == "10.000000"
    view = client.get("/v1/instances/a", headers=auth(project_key)).json()
    assert view["cost_so_far"] == "0.060000"  # a started run costs its first minute
    clock.advance(600)
    assert client.get("/v1/instances/a", headers=auth(project_key)).json()["cost_so_far"] == "0.600000"
    listed = client.get("/v1/instances", headers=auth(project_key)).json()["data"]
    assert listed[0]["cost_so_far"] == "0.600000"


def test_budget_limit_on_patch_validated_and_cleared(client: TestClient, fleet: Fleet, project_key: str) -> None:
    host = fleet.host("h1")
    _ready(client, fleet, host, project_key, name="a")
    bad = client.patch("/v1/instances/a", json={"budget_limit": "lots"}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM and bad.json()["param"] == "budget_limit"
    negative = client.post("/v1/instances", json={"name": "b", "gpu": "h100", "budget_limit": "-1"},
                           headers=auth(project_key))
    assert negative.status_code == 422 and negative.json()["param"] == "budget_limit"
    set_ = client.patch("/v1/instances/a", json={"budget_limit": "5"}, headers=auth(project_key)).json()
    assert set_["budget_limit"] == "5.000000"
    renamed = client.patch("/v1/instances/a", json={"name": "a2"}, headers=auth(project_key)).json()
    assert renamed["budget_limit"] == "5.000000"  # untouched when not sent
    cleared = client.patch("/v1/instances/a2", json={"budget_limit": None}, headers=auth(project_key)).json()
    assert cleared["budget_limit"] is None


def test_budget_crossing_terminates_through_the_meter(client: TestClient, fleet: Fleet, project_key: str,
                                                      state: AppState, clock: FakeClock) -> None:
    host = fleet.host("h1", price="3.60")
    _ready(client, fleet, host, project_key, name="a", budget_limit="1.00")
    clock.advance(999)
    meter.run_once(state)
    assert client.get("/v1/instances/a", headers=auth(project_key)).json()["status"] == "ready"
    clock.advance(1)
    meter.run_once(state)
    view = client.get("/v1/instances/a", headers=auth(project_key)).json()
    assert (view["status"], view["status_reason"]) == ("draining", "budget_exceeded")
    events = client.get("/v1/instances/a/events", headers=auth(project_key)).json()["data"]
    assert [e["data"]["threshold"] for e in events if e["type"] == "instance.budget_threshold"] == [50, 80, 100]


def test_extend_a_reservation(client: TestClient, fleet: Fleet, project_key: str, clock: FakeClock) -> None:
    host = fleet.host("h1", price="3.60")
    inst = _ready(client, fleet, host, project_key, name="a", duration_hours=2)
    ready = client.get("/v1/instances/a", headers=auth(project_key)).json()
    assert ready["cost_so_far"] == "7.200000" and ready["duration_hours"] == 2
    extended = client.post("/v1/instances/a/extend", json={"hours": 3}, headers=auth(project_key))
    assert extended.status_code == 200, extended.text
    body = extended.json()
    assert body["duration_hours"] == 5 and body["cost_so_far"] == "18.000000"
    assert body["expires_at"] > ready["expires_at"]
    zero = client.post("/v1/instances/a/extend", json={"hours": 0}, headers=auth(project_key))
    assert zero.status_code == 422 and zero.json()["param"] == "hours"
    too_long = client.post("/v1/instances/a/extend", json={"hours": 164}, headers=auth(project_key))
    assert too_long.status_code == 422 and too_long.json()["param"] == "hours"
    _ready(client, fleet, host, project_key, name="plain")
    plain = client.post("/v1/instances/plain/extend", json={"hours": 1}, headers=auth(project_key))
    assert plain.status_code == 409 and plain.json()["code"] == "invalid_state"
    usage = client.get("/v1/usage", params={"instance_id": inst["id"]}, headers=auth(project_key)).json()["data"]
    assert [(u["kind"], u["seconds"], u["amount"]) for u in usage] == [
        ("reservation", 7200, "7.200000"), ("reservation", 10800, "10.800000")]


def test_usage_pages_filters_and_exports_csv(client: TestClient, fleet: Fleet, project_key: str,
                                             clock: FakeClock) -> None:
    host = fleet.host("h1", price="3.60")
    inst = _ready(client, fleet, host, project_key, name="a", labels={"team": "ml"})
    for _ in range(3):
        client.post("/v1/instances/a/stop", headers=auth(project_key))
        clock.advance(10)
        fleet.report(host, str(inst["id"]), "stopped")
        client.post("/v1/instances/a/start", headers=auth(project_key))
        fleet.report(host, str(inst["id"]), "starting")
        fleet.report(host, str(inst["id"]), "ready")
        clock.advance(100)
    first = client.get("/v1/usage", params={"limit": 2}, headers=auth(project_key)).json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    rest = client.get("/v1/usage", params={"limit": 2, "cursor": first["next_cursor"]},
                      headers=auth(project_key)).json()
    assert rest["next_cursor"] is None
    entries = first["data"] + rest["data"]
    # each run: 100 s ready, then 10 s draining (billed); the first run's 10 s is topped up to a minute
    assert [(e["kind"], e["seconds"], e["amount"]) for e in entries] == [("compute", 60, "0.060000"),
                                                                         ("compute", 110, "0.110000"),
                                                                         ("compute", 110, "0.110000")]
    assert entries[0]["labels"] == {"team": "ml"} and entries[0]["rate_per_hour"] == "3.600000"
    since = client.get("/v1/usage", params={"since": entries[1]["period_start"]}, headers=auth(project_key))
    assert [e["id"] for e in since.json()["data"]] == [e["id"] for e in entries[1:]]
    as_csv = client.get("/v1/usage", headers={**auth(project_key), "Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["amount"] for r in rows] == ["0.060000", "0.110000", "0.110000"] and rows[0]["labels"] == "team=ml"
    assert client.get("/v1/usage", params={"format": "csv"}, headers=auth(project_key)).text == as_csv.text
    bad = client.get("/v1/usage", params={"cursor": "nonsense!"}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.json()["param"] == "cursor"
    missing = client.get("/v1/usage", params={"instance_id": "inst_nope"}, headers=auth(project_key))
    assert missing.status_code == 404


def test_costs_group_and_total_and_csv(client: TestClient, fleet: Fleet, project_key: str, clock: FakeClock) -> None:
    host = fleet.host("h1", price="3.60")
    for name, team in (("a", "ml"), ("b", "ml"), ("c", "infra")):
        _ready(client, fleet, host, project_key, name=name, labels={"team": team})
    clock.advance(120)
    for name in ("a", "b", "c"):
        inst = client.post(f"/v1/instances/{name}/terminate", headers=auth(project_key)).json()
        fleet.report(host, inst["id"], "stopped")
    body = client.get("/v1/costs", params={"month": "2026-01", "group_by": "label:team"},
                      headers=auth(project_key)).json()
    assert body["total"] == "0.360000" and body["month"] == "2026-01"
    assert [(g["key"], g["amount"]) for g in body["groups"]] == [("ml", "0.240000"), ("infra", "0.120000")]
    by_gpu = client.get("/v1/costs", params={"group_by": "gpu"}, headers=auth(project_key)).json()
    assert [(g["key"], g["seconds"]) for g in by_gpu["groups"]] == [("h100-80gb", 360)]
    by_day = client.get("/v1/costs", params={"group_by": "day"}, headers=auth(project_key)).json()
    assert [g["key"] for g in by_day["groups"]] == ["2026-01-01"]
    by_instance = client.get("/v1/costs", headers=auth(project_key)).json()
    assert len(by_instance["groups"]) == 3 and sum(Decimal(g["amount"]) for g in by_instance["groups"]) == \
        Decimal(by_instance["total"])
    other_month = client.get("/v1/costs", params={"month": "2025-12"}, headers=auth(project_key)).json()
    assert other_month["total"] == "0.000000" and other_month["groups"] == []
    exported = client.get("/v1/costs", params={"group_by": "label:team", "format": "csv"},
                          headers=auth(project_key)).text
    assert exported.splitlines() == ["label:team,seconds,amount", "ml,240,0.240000", "infra,120,0.120000",
                                     "total,360,0.360000"]
    for params, field in (({"month": "2026-13"}, "month"), ({"group_by": "colour"}, "group_by"),
                          ({"group_by": "label:"}, "group_by"), ({"format": "xml"}, "format")):
        bad = client.get("/v1/costs", params=params, headers=auth(project_key))
        assert bad.status_code == 422 and bad.json()["param"] == field, (params, bad.text)


def test_billing_needs_its_scope_and_sees_only_its_project(client: TestClient, fleet: Fleet,
                                                           project_key: str) -> None:
    host = fleet.host("h1")
    _ready(client, fleet, host, project_key, name="a")
    client.post("/v1/instances/a/stop", headers=auth(project_key))
    other = client.post("/v1/projects", json={"name": "team-b"}).json()
    reader = client.post(f"/v1/projects/{other['id']}/keys", json={"name": "r", "scopes": ["instances:read"]}).json()
    for path in ("/v1/usage", "/v1/costs"):
        denied = client.get(path, headers=auth(reader["key"]))
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden_scope"
    billing_key = client.post(f"/v1/projects/{other['id']}/keys", json={"name": "b", "scopes": ["billing:read"]}).json()
    assert client.get("/v1/usage", headers=auth(billing_key["key"])).json()["data"] == []
    assert client.get("/v1/costs", headers=auth(billing_key["key"])).json()["total"] == "0.000000"
    assert len(client.get("/v1/usage").json()["data"]) == 0  # still draining: nothing closed yet


def test_project_budget_blocks_creates_with_402(client: TestClient, fleet: Fleet, project_key: str,
                                                 state: AppState, clock: FakeClock) -> None:
    host = fleet.host("h1", price="3.60")
    [project_id] = [p["id"] for p in client.get("/v1/projects").json()["data"] if p["name"] == "team-a"]
    bad = client.patch(f"/v1/projects/{project_id}", json={"on_budget_exceeded": "panic"})
    assert bad.status_code == 422 and bad.json()["param"] == "on_budget_exceeded"
    denied = client.patch(f"/v1/projects/{project_id}", json={"monthly_budget": "1"}, headers=auth(project_key))
    assert denied.status_code == 403
    patched = client.patch(f"/v1/projects/{project_id}", json={"monthly_budget": "1.00"}).json()
    assert (patched["monthly_budget"], patched["on_budget_exceeded"]) == ("1.000000", "block_creates")
    _ready(client, fleet, host, project_key, name="a")
    clock.advance(1000)
    refused = client.post("/v1/instances", json={"name": "b", "gpu": "h100"}, headers=auth(project_key))
    assert refused.status_code == 402 and refused.headers["content-type"] == PROBLEM
    assert refused.json()["code"] == "budget_exceeded"
    meter.run_once(state)
    assert client.get("/v1/instances/a", headers=auth(project_key)).json()["status"] == "ready"
    stop = client.patch(f"/v1/projects/{project_id}", json={"on_budget_exceeded": "stop_instances"}).json()
    assert (stop["monthly_budget"], stop["on_budget_exceeded"]) == ("1.000000", "stop_instances")
    meter.run_once(state)
    view = client.get("/v1/instances/a", headers=auth(project_key)).json()
    assert (view["status"], view["status_reason"]) == ("draining", "budget_exceeded")
    removed = client.patch(f"/v1/projects/{project_id}", json={"monthly_budget": None}).json()
    assert (removed["monthly_budget"], removed["on_budget_exceeded"]) == (None, None)
    assert client.post("/v1/instances", json={"name": "b", "gpu": "h100"}, headers=auth(project_key)).status_code == 201
