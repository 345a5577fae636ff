"""Webhooks and events through the app, on SQLite and PostgreSQL, delivered by the dispatcher's
`run_once` to a real HTTP receiver on 127.0.0.1 that verifies each delivery with `standardwebhooks`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import WebhookVerificationError

from coldplate.clock import FakeClock
from coldplate.loops import webhooks as dispatcher
from coldplate.state import AppState
from tests.conftest import Fleet, auth
from tests.webhook_receiver import Receiver, receiving

PROBLEM = "application/problem+json"


@pytest.fixture
def receiver(state: AppState) -> Iterator[Receiver]:
    state.settings.allow_private_webhooks = True  # the receiver is on loopback
    with receiving() as r:
        yield r


def hook(client: TestClient, key: str, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **body}, headers=auth(key))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def lifecycle(client: TestClient, fleet: Fleet, key: str, name: str = "w1") -> str:
    fleet.host(f"h-{name}")
    inst = client.post("/v1/instances", json={"name": name, "gpu": "h100"}, headers=auth(key)).json()
    host = inst["hostnode_id"]
    for status in ("starting", "ready"):
        assert fleet.report(host, inst["id"], status).status_code == 200
    client.post(f"/v1/instances/{inst['id']}/terminate", json={"force": True}, headers=auth(key))
    fleet.report(host, inst["id"], "terminated")
    return str(inst["id"])


def test_create_shows_the_secret_once(client: TestClient, project_key: str) -> None:
    created = hook(client, project_key, "https://hooks.example.com/x", event_types=["instance.lifecycle"],
                   description="ops")
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["id"].startswith("wh_") and created["enabled"] is True
    fetched = client.get(f"/v1/webhooks/{created['id']}", headers=auth(project_key)).json()
    listed = client.get("/v1/webhooks", headers=auth(project_key)).json()["data"]
    assert "secret" not in fetched and all("secret" not in h for h in listed)
    assert [h["id"] for h in listed] == [created["id"]]
    patched = client.patch(f"/v1/webhooks/{created['id']}", json={"enabled": False, "event_types": []},
                           headers=auth(project_key)).json()
    assert (patched["enabled"], patched["disabled_reason"], patched["event_types"]) == (False, "user", [])
    rotated = client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=auth(project_key)).json()
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_expires_at"] == "2026-01-02T00:00:00Z"
    assert client.delete(f"/v1/webhooks/{created['id']}", headers=auth(project_key)).status_code == 204
    gone = client.get(f"/v1/webhooks/{created['id']}", headers=auth(project_key))
    assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(("body", "param"), [
    ({"url": "ftp://example.com/"}, "url"),
    ({"url": "http://127.0.0.1:8080/hook"}, "url"),  # loopback: refused unless allowed
    ({"url": "http://10.0.0.5/hook"}, "url"),
    ({"url": "http://169.254.169.254/latest"}, "url"),
    ({"url": "https://ok.example.com/", "event_types": ["instance.ready"]}, "event_types"),
    ({"url": "https://ok.example.com/", "secret": "mine"}, "secret"),
    ({}, "url"),
])
def test_bad_webhooks_are_4xx_naming_the_field(client: TestClient, project_key: str, body: dict[str, Any],
                                               param: str) -> None:
    response = client.post("/v1/webhooks", json=body, headers=auth(project_key))
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["param"].startswith(param)


def test_scopes_guard_webhooks(client: TestClient) -> None:
    project = client.post("/v1/projects", json={"name": "ro"}).json()
    key = client.post(f"/v1/projects/{project['id']}/keys", json={"name": "ro", "scopes": ["webhooks:read"]}).json()
    assert client.get("/v1/webhooks", headers=auth(key["key"])).status_code == 200
    denied = client.post("/v1/webhooks", json={"url": "https://x.example.com/"}, headers=auth(key["key"]))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden_scope"


def test_every_lifecycle_event_is_delivered_signed(client: TestClient, fleet: Fleet, project_key: str,
                                                   receiver: Receiver, state: AppState) -> None:
    created = hook(client, project_key, receiver.url, event_types=["instance.lifecycle"])
    iid = lifecycle(client, fleet, project_key)
    client.patch(f"/v1/instances/{iid}", json={"labels": {"a": "b"}}, headers=auth(project_key))  # not subscribed
    assert dispatcher.run_once(state) == 5
    # Each verified by standardwebhooks, or this raises. Sent concurrently: receivers order by `seq`.
    payloads = sorted(receiver.payloads(created["secret"]), key=lambda p: p["seq"])
    assert [p["type"] for p in payloads] == ["instance.lifecycle"] * 5
    assert [(p["data"]["previous_status"], p["data"]["status"]) for p in payloads] == [
        (None, "provisioning"), ("provisioning", "starting"), ("starting", "ready"), ("ready", "draining"),
        ("draining", "terminated")]
    assert all(p["data"]["id"] == iid and p["data"]["gpu"]["type"] == "h100-80gb" for p in payloads)
    assert payloads[0]["timestamp"] == "2026-01-01T00:00:00Z"  # business time: the injected clock
    assert len({r.webhook_id for r in receiver.received}) == 5
    logged = client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=auth(project_key)).json()["data"]
    assert [d["status"] for d in logged] == ["delivered"] * 5
    assert {d["http_status"] for d in logged} == {200} and all(d["latency_ms"] >= 0 for d in logged)
    assert {d["id"] for d in logged} == {r.webhook_id for r in receiver.received}
    assert logged[0]["response"] == "ok" and logged[0]["next_attempt_at"] is None
    assert dispatcher.run_once(state) == 0  # nothing sent twice


def test_a_failing_receiver_that_recovers_gets_every_event(client: TestClient, fleet: Fleet, project_key: str,
                                                           receiver: Receiver, state: AppState,
                                                           clock: FakeClock) -> None:
    created = hook(client, project_key, receiver.url)
    receiver.script = [500] * 3 + [503] * 4
    iid = lifecycle(client, fleet, project_key)
    dispatcher.run_once(state)  # 5 attempts: all fail
    assert receiver.received == [] and len(receiver.refused) == 5
    pending = client.get(f"/v1/webhooks/{created['id']}/deliveries", params={"status": "pending"},
                         headers=auth(project_key)).json()["data"]
    assert len(pending) == 5 and all(d["attempts"] == 1 and d["http_status"] in (500, 503) for d in pending)
    assert all(d["next_attempt_at"] > "2026-01-01T00:00:03Z" for d in pending)
    clock.advance(6.1)  # past the first delay (5 s with up to 20 % jitter)
    dispatcher.run_once(state)  # 2 more fail, 3 succeed
    clock.advance(36.1)
    dispatcher.run_once(state)
    payloads = receiver.payloads(created["secret"])
    assert sorted(p["seq"] for p in payloads) == [e["seq"] for e in client.get(
        "/v1/events", params={"instance_id": iid}, headers=auth(project_key)).json()["data"]]
    first_refused = set(receiver.refused)
    assert first_refused <= {r.webhook_id for r in receiver.received}  # retries carry the same webhook-id


def test_rotation_signs_with_both_secrets_for_a_day(client: TestClient, fleet: Fleet, project_key: str,
                                                     receiver: Receiver, state: AppState, clock: FakeClock) -> None:
    created = hook(client, project_key, receiver.url, event_types=["instance.updated"])
    iid = lifecycle(client, fleet, project_key)
    rotated = client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=auth(project_key)).json()
    client.patch(f"/v1/instances/{iid}", json={"labels": {"n": "1"}}, headers=auth(project_key))
    dispatcher.run_once(state)
    (during,) = receiver.received
    assert during.verify(created["secret"])["data"]["labels"] == {"n": "1"}
    assert during.verify(rotated["secret"])["type"] == "instance.updated"
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    clock.advance(24 * 3600 + 1)
    client.patch(f"/v1/instances/{iid}", json={"labels": {"n": "2"}}, headers=auth(project_key))
    dispatcher.run_once(state)
    after = receiver.received[1]
    assert after.verify(rotated["secret"])["data"]["labels"] == {"n": "2"}
    with pytest.raises(WebhookVerificationError, match="signature"):
        after.verify(created["secret"])


def test_gone_disables_and_the_project_hears_of_it(client: TestClient, fleet: Fleet, project_key: str,
                                                   receiver: Receiver, state: AppState) -> None:
    gone = hook(client, project_key, receiver.url, event_types=["instance.lifecycle"])
    watcher = hook(client, project_key, receiver.url + "?watcher", event_types=["webhook.disabled"])
    receiver.script = [410]
    fleet.host("h-g")
    client.post("/v1/instances", json={"name": "g", "gpu": "h100"}, headers=auth(project_key))
    dispatcher.run_once(state)
    view = client.get(f"/v1/webhooks/{gone['id']}", headers=auth(project_key)).json()
    assert (view["enabled"], view["disabled_reason"]) == (False, "gone")
    (notice,) = receiver.payloads(watcher["secret"])
    assert notice["type"] == "webhook.disabled" and notice["data"]["webhook_id"] == gone["id"]
    events = client.get("/v1/events", params={"type": "webhook.disabled"}, headers=auth(project_key)).json()["data"]
    assert [e["data"]["reason"] for e in events] == ["gone"]
    refused = client.post(f"/v1/webhooks/{gone['id']}/deliveries/{receiver.refused[0]}/redeliver",
                          headers=auth(project_key))
    assert refused.status_code == 409 and refused.json()["param"] == "enabled"


def test_redeliver_sends_the_same_message_again(client: TestClient, fleet: Fleet, project_key: str,
                                                receiver: Receiver, state: AppState) -> None:
    created = hook(client, project_key, receiver.url, event_types=["instance.lifecycle"])
    fleet.host("h-r")
    client.post("/v1/instances", json={"name": "r", "gpu": "h100"}, headers=auth(project_key))
    dispatcher.run_once(state)
    (first,) = receiver.received
    answer = client.post(f"/v1/webhooks/{created['id']}/deliveries/{first.webhook_id}/redeliver",
                         headers=auth(project_key))
    assert answer.status_code == 202 and answer.json()["status"] == "pending"
    dispatcher.run_once(state)
    second = receiver.received[1]
    assert (second.webhook_id, second.body) == (first.webhook_id, first.body)
    assert client.get(f"/v1/webhooks/{created['id']}/deliveries",
                      headers=auth(project_key)).json()["data"][0]["attempts"] == 2
    missing = client.post(f"/v1/webhooks/{created['id']}/deliveries/msg_nope/redeliver", headers=auth(project_key))
    assert missing.status_code == 404 and missing.json()["param"] == "delivery_id"


def test_the_response_excerpt_is_at_most_one_kilobyte(client: TestClient, fleet: Fleet, project_key: str,
                                                      receiver: Receiver, state: AppState) -> None:
    created = hook(client, project_key, receiver.url)
    receiver.reply_body = b"x" * 5000
    fleet.host("h-x")
    client.post("/v1/instances", json={"name": "x", "gpu": "h100"}, headers=auth(project_key))
    dispatcher.run_once(state)
    (logged,) = client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=auth(project_key)).json()["data"]
    assert logged["response"] == "x" * 1024


def test_events_are_listed_oldest_first_paginated_and_filtered(client: TestClient, fleet: Fleet,
                                                                project_key: str, clock: FakeClock) -> None:
    first = lifecycle(client, fleet, project_key, "e1")
    clock.advance(60)
    second = lifecycle(client, fleet, project_key, "e2")
    client.patch(f"/v1/instances/{second}", json={"labels": {"k": "v"}}, headers=auth(project_key))
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get("/v1/events", params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                          headers=auth(project_key)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen) and len(seen) == 11
    assert {e["type"] for e in seen} == {"instance.lifecycle", "instance.updated"}
    assert all(set(e) == {"id", "seq", "type", "timestamp", "data"} for e in seen)
    only = client.get("/v1/events", params={"instance_id": first}, headers=auth(project_key)).json()["data"]
    assert [e["data"]["status"] for e in only] == ["provisioning", "starting", "ready", "draining", "terminated"]
    updated = client.get("/v1/events", params={"type": "instance.updated"}, headers=auth(project_key)).json()["data"]
    assert [(e["data"]["instance_id"], e["data"]["labels"]) for e in updated] == [(second, {"k": "v"})]
    later = client.get("/v1/events", params={"since": "2026-01-01T00:01:00Z"}, headers=auth(project_key)).json()
    assert {e["data"].get("id", e["data"].get("instance_id")) for e in later["data"]} == {second}
    other = client.post("/v1/projects", json={"name": "other"}).json()
    other_key = client.post(f"/v1/projects/{other['id']}/keys", json={"name": "k"}).json()["key"]
    assert client.get("/v1/events", headers=auth(other_key)).json()["data"] == []
    bad = client.get("/v1/events", params={"cursor": "abc"}, headers=auth(project_key))
    assert bad.status_code == 422 and bad.json()["param"] == "cursor"
    assert json.loads(json.dumps(seen))  # plain JSON throughout


def test_a_named_host_is_pinned_to_its_checked_address_and_keeps_its_host_header(
        client: TestClient, fleet: Fleet, project_key: str, receiver: Receiver, state: AppState) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    created = hook(client, project_key, f"http://localhost:{port}/hook?a=1")
    fleet.host("h-n")
    client.post("/v1/instances", json={"name": "n", "gpu": "h100"}, headers=auth(project_key))
    dispatcher.run_once(state)
    (got,) = receiver.received
    assert got.headers["host"] == f"localhost:{port}" and got.path == "/hook?a=1"
    assert got.verify(created["secret"])["type"] == "instance.lifecycle"
    state.settings.allow_private_webhooks = False  # the same endpoint, now refused at delivery time
    client.patch("/v1/instances/n", json={"labels": {"x": "y"}}, headers=auth(project_key))
    dispatcher.run_once(state)
    assert len(receiver.received) == 1
    refused = client.get(f"/v1/webhooks/{created['id']}/deliveries", params={"status": "pending"},
                         headers=auth(project_key)).json()["data"]
    assert refused[0]["error"].startswith("destination refused") and refused[0]["http_status"] is None


def test_redirects_are_not_followed(client: TestClient, fleet: Fleet, project_key: str, receiver: Receiver,
                                    state: AppState, clock: FakeClock) -> None:
    """A redirect could point anywhere (past the destination check): it counts as a failure."""
    created = hook(client, project_key, receiver.url)
    receiver.script = [307]
    fleet.host("h-3")
    client.post("/v1/instances", json={"name": "m", "gpu": "h100"}, headers=auth(project_key))
    dispatcher.run_once(state)
    (logged,) = client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=auth(project_key)).json()["data"]
    assert (logged["status"], logged["http_status"], len(receiver.refused)) == ("pending", 307, 1)
    clock.advance(6.1)
    dispatcher.run_once(state)
    assert len(receiver.received) == 1 and receiver.received[0].webhook_id == logged["id"]


def test_every_type_of_event_written_can_be_subscribed_to(client: TestClient, fleet: Fleet,
                                                          project_key: str) -> None:
    """Before: `instance.reservation_extended` and `instance.desired_changed` were written and
    delivered to all-events endpoints, but naming either in `event_types` was a 422."""
    host = fleet.host("h-types")
    created = client.post("/v1/instances", json={"name": "r", "gpu": "h100", "duration_hours": 1},
                          headers=auth(project_key))
    assert created.status_code == 201, created.text
    fleet.report(host, created.json()["id"], "ready")  # type: ignore[arg-type]
    assert client.post("/v1/instances/r/extend", json={"hours": 1}, headers=auth(project_key)).status_code == 200
    assert client.post("/v1/instances/r/stop", headers=auth(project_key)).json()["status"] == "draining"
    assert client.post("/v1/instances/r/terminate", headers=auth(project_key)).status_code == 200
    events = client.get("/v1/events", params={"limit": 100}, headers=auth(project_key)).json()["data"]
    types = {e["type"] for e in events}
    assert {"instance.lifecycle", "instance.reservation_extended", "instance.desired_changed"} <= types
    subscribed = hook(client, project_key, "https://hooks.example.com/all", event_types=sorted(types))
    assert subscribed["event_types"] == sorted(types)
