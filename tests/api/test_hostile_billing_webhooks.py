"""Hostile input to the routes issues 9 and 10 added (join tokens, events, webhooks and their
deliveries, usage, costs, extend, project and instance budgets), on SQLite and PostgreSQL: every
case is a 4xx problem naming the field, nothing is written, and after each family a second
tenant's instance on the same host still starts, lists and terminates (tests/api/hostile.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.hostile import DEEP, HUGE, OVERSIZE, World, assert_problem, assert_unharmed, send, world
from tests.conftest import ADMIN_KEY, Fleet, auth

NUL, SURROGATE = "a\x00b", "\ud800"
HOOK = "https://hooks.example.com/x"
LATE = "9999-12-31T23:59:59-14:00"  # past the last instant a datetime can hold, once in UTC
EARLY = "0001-01-01T00:00:00%2B14:00"  # before the first one


def usage_cursor(*parts: Any) -> str:
    """A cursor shaped like /v1/usage's (base64 of a JSON list), carrying what the client chose."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def webhook(**fields: Any) -> dict[str, Any]:
    return {"url": HOOK, **fields}


# (method, path, JSON body, expected status, field named); `{iid}` is the attacker's instance,
# `{wh}` its webhook, `{prj}` a project and `{jt}` a join token.
Case = tuple[str, str, Any, int, str | None]
FAMILIES: dict[str, list[Case]] = {
    "nul": [
        ("POST", "/v1/webhooks", webhook(url="https://a\x00b.example.com/"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(url=f"{HOOK}/{NUL}"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(description=NUL), 422, "description"),
        ("POST", "/v1/webhooks", webhook(event_types=[NUL]), 422, "event_types.0"),
        ("PATCH", "/v1/webhooks/{wh}", {"description": NUL}, 422, "description"),
        ("PATCH", "/v1/webhooks/{wh}", {"url": "https://a\x00b.example.com/"}, 422, "url"),
        ("GET", "/v1/webhooks/%00", None, 422, "webhook_id"),
        ("PATCH", "/v1/webhooks/%00", {"enabled": False}, 422, "webhook_id"),
        ("DELETE", "/v1/webhooks/%00", None, 422, "webhook_id"),
        ("POST", "/v1/webhooks/%00/rotate-secret", None, 422, "webhook_id"),
        ("GET", "/v1/webhooks/%00/deliveries", None, 422, "webhook_id"),
        ("GET", "/v1/webhooks/{wh}/deliveries?cursor=%00", None, 422, "cursor"),
        ("POST", "/v1/webhooks/{wh}/deliveries/%00/redeliver", None, 422, "delivery_id"),
        ("GET", "/v1/events?type=%00", None, 422, "type"),
        ("GET", "/v1/events?instance_id=%00", None, 422, "instance_id"),
        ("GET", "/v1/events?cursor=%00", None, 422, "cursor"),
        ("GET", "/v1/usage?instance_id=%00", None, 422, "instance_id"),
        ("GET", "/v1/usage?cursor=%00", None, 422, "cursor"),
        ("GET", "/v1/usage?cursor=" + usage_cursor("2026-01-01T00:00:00+00:00", NUL), None, 422, "cursor"),
        ("GET", "/v1/costs?month=%00", None, 422, "month"),
        ("GET", "/v1/costs?group_by=%00", None, 422, "group_by"),
        ("GET", "/v1/costs?group_by=label:%00", None, 422, "group_by"),
        ("POST", "/v1/instances/%00/extend", {"hours": 1}, 422, "ref"),
        ("POST", "/v1/join-tokens", {"name": NUL}, 422, "name"),
        ("GET", "/v1/join-tokens/%00", None, 422, "token_id"),
        ("DELETE", "/v1/join-tokens/%00", None, 422, "token_id"),
        ("PATCH", "/v1/projects/%00", {"monthly_budget": "1"}, 422, "project_id"),
    ],
    "surrogate": [
        ("POST", "/v1/webhooks", webhook(url=f"https://{SURROGATE}.example.com/"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(url=f"{HOOK}/{SURROGATE}"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(description=SURROGATE), 422, "description"),
        ("POST", "/v1/webhooks", webhook(event_types=[SURROGATE]), 422, "event_types.0"),
        ("PATCH", "/v1/webhooks/{wh}", {"description": SURROGATE}, 422, "description"),
        ("POST", "/v1/join-tokens", {"name": SURROGATE}, 422, "name"),
        ("GET", "/v1/webhooks/%ED%A0%80", None, 422, "webhook_id"),
        ("GET", "/v1/usage?cursor=" + usage_cursor("2026-01-01T00:00:00+00:00", SURROGATE), None, 422, "cursor"),
        ("GET", "/v1/usage?cursor=" + usage_cursor("2026-01-01T00:00:00\ud800", "x"), None, 422, "cursor"),
    ],
    "overlong": [
        ("POST", "/v1/webhooks", webhook(url=HOOK + "/" + "x" * 2000), 422, "url"),
        ("POST", "/v1/webhooks", webhook(description="d" * 501), 422, "description"),
        ("POST", "/v1/webhooks", webhook(event_types=["instance.lifecycle"] * 100), 422, "event_types"),
        ("PATCH", "/v1/webhooks/{wh}", {"url": HOOK + "/" + "x" * 2000}, 422, "url"),
        ("GET", "/v1/webhooks/" + "w" * 101, None, 422, "webhook_id"),
        ("GET", "/v1/webhooks/{wh}/deliveries?cursor=" + "1" * 501, None, 422, "cursor"),
        ("GET", "/v1/events?type=" + "t" * 61, None, 422, "type"),
        ("GET", "/v1/events?cursor=" + "9" * 41, None, 422, "cursor"),
        ("GET", "/v1/usage?cursor=" + "c" * 501, None, 422, "cursor"),
        ("GET", "/v1/costs?group_by=label:" + "k" * 300, None, 422, "group_by"),
        ("GET", "/v1/costs?month=2026-011", None, 422, "month"),
        ("POST", "/v1/join-tokens", {"name": "n" * 201}, 422, "name"),
        ("GET", "/v1/join-tokens/" + "j" * 101, None, 422, "token_id"),
        ("POST", "/v1/instances/" + "i" * 101 + "/extend", {"hours": 1}, 422, "ref"),
    ],
    "numbers": [
        ("POST", "/v1/instances/{iid}/extend", {"hours": HUGE}, 422, "hours"),
        ("POST", "/v1/instances/{iid}/extend", {"hours": float("nan")}, 422, "hours"),
        ("POST", "/v1/instances/{iid}/extend", {"hours": -1}, 422, "hours"),
        ("POST", "/v1/join-tokens", {"max_uses": HUGE}, 422, "max_uses"),
        ("POST", "/v1/join-tokens", {"expires_in_hours": float("nan")}, 422, "expires_in_hours"),
        ("POST", "/v1/join-tokens", {"expires_in_hours": float("inf")}, 422, "expires_in_hours"),
        ("POST", "/v1/join-tokens", {"expires_in_hours": 1e309}, 422, "expires_in_hours"),
        ("POST", "/v1/join-tokens", {"expires_at": "10000-01-01T00:00:00Z"}, 422, "expires_at"),
        ("POST", "/v1/join-tokens", {"expires_at": LATE}, 422, "expires_at"),
        ("PATCH", "/v1/projects/{prj}", {"monthly_budget": "1e400"}, 422, "monthly_budget"),
        ("PATCH", "/v1/projects/{prj}", {"monthly_budget": "NaN"}, 422, "monthly_budget"),
        ("PATCH", "/v1/projects/{prj}", {"monthly_budget": -1}, 422, "monthly_budget"),
        ("PATCH", "/v1/instances/{iid}", {"budget_limit": "Infinity"}, 422, "budget_limit"),
        ("PATCH", "/v1/instances/{iid}", {"budget_limit": "1e30"}, 422, "budget_limit"),
        ("POST", "/v1/instances", {"name": "evil", "gpu": "h100", "budget_limit": "NaN"}, 422, "budget_limit"),
        ("POST", "/v1/instances", {"name": "evil", "gpu": "h100", "budget_limit": HUGE}, 422, "budget_limit"),
        ("GET", "/v1/events?limit=" + str(HUGE), None, 422, "limit"),
        ("GET", "/v1/events?cursor=" + str(HUGE), None, 422, "cursor"),
        ("GET", "/v1/usage?limit=nan", None, 422, "limit"),
        ("GET", "/v1/webhooks/{wh}/deliveries?limit=" + str(HUGE), None, 422, "limit"),
        ("GET", "/v1/webhooks/{wh}/deliveries?cursor=" + str(HUGE), None, 422, "cursor"),
        ("GET", "/v1/costs?month=99999-01", None, 422, "month"),
        ("GET", "/v1/events?since=" + LATE.replace("+", "%2B"), None, 422, "since"),
        ("GET", "/v1/events?since=" + EARLY, None, 422, "since"),
        ("GET", "/v1/usage?since=" + EARLY, None, 422, "since"),
        ("GET", "/v1/usage?until=" + LATE, None, 422, "until"),
    ],
    "types": [
        ("POST", "/v1/webhooks", webhook(url=123), 422, "url"),
        ("POST", "/v1/webhooks", webhook(url="ftp://example.com/"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(url="https://u:p@example.com/"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(url="https://example.com:99999/"), 422, "url"),
        ("POST", "/v1/webhooks", webhook(event_types="instance.lifecycle"), 422, "event_types"),
        ("POST", "/v1/webhooks", webhook(event_types=["no.such"]), 422, "event_types"),
        ("POST", "/v1/webhooks", webhook(enabled="maybe"), 422, "enabled"),
        ("POST", "/v1/webhooks", webhook(unknown=1), 422, "unknown"),
        ("POST", "/v1/webhooks", [HOOK], 422, None),
        ("PATCH", "/v1/webhooks/{wh}", {"event_types": {"a": 1}}, 422, "event_types"),
        ("GET", "/v1/webhooks/{wh}/deliveries?status=exploded", None, 422, "status"),
        ("GET", "/v1/webhooks/{wh}/deliveries?cursor=abc", None, 422, "cursor"),
        ("GET", "/v1/events?since=yesterday", None, 422, "since"),
        ("GET", "/v1/events?cursor=-1", None, 422, "cursor"),
        ("GET", "/v1/events?cursor=%C2%B2", None, 422, "cursor"),  # '²': a digit to str.isdigit, not to int()
        ("GET", "/v1/webhooks/{wh}/deliveries?cursor=%C2%B2", None, 422, "cursor"),
        ("GET", "/v1/usage?cursor=" + usage_cursor("9999-12-31T23:59:59-14:00", "x"), None, 422, "cursor"),
        ("GET", "/v1/usage?cursor=" + usage_cursor("2026-01-01T00:00:00+00:00", "x" * 100), None, 422, "cursor"),
        ("GET", "/v1/usage?until=yesterday", None, 422, "until"),
        ("GET", "/v1/usage?cursor=bm90IGpzb24", None, 422, "cursor"),
        ("GET", "/v1/usage?cursor=WzEsMl0", None, 422, "cursor"),  # [1, 2]: JSON, not a cursor
        ("GET", "/v1/usage?format=xml", None, 422, "format"),
        ("GET", "/v1/costs?month=2026-13", None, 422, "month"),
        ("GET", "/v1/costs?group_by=colour", None, 422, "group_by"),
        ("POST", "/v1/instances/{iid}/extend", {"hours": "1h"}, 422, "hours"),
        ("POST", "/v1/instances/{iid}/extend", {}, 422, "hours"),
        ("POST", "/v1/join-tokens", {"expires_at": "tomorrow"}, 422, "expires_at"),
        ("POST", "/v1/join-tokens", {"expires_at": "2030-01-01T00:00:00"}, 422, "expires_at"),
        ("POST", "/v1/join-tokens", {"max_uses": "many"}, 422, "max_uses"),
        ("PATCH", "/v1/projects/{prj}", {"on_budget_exceeded": "explode"}, 422, "on_budget_exceeded"),
        ("PATCH", "/v1/projects/{prj}", {"monthly_budget": [1]}, 422, "monthly_budget"),
    ],
}
ADMIN_PATHS = ("/v1/projects", "/v1/join-tokens")


def _names(w: World) -> dict[str, str]:
    hook = w.client.post("/v1/webhooks", json=webhook(), headers=auth(w.attacker))
    assert hook.status_code == 201, hook.text
    token = w.client.post("/v1/join-tokens", json={"name": "hostile"}, headers=auth(ADMIN_KEY))
    project = w.client.get("/v1/projects", headers=auth(ADMIN_KEY)).json()["data"][-1]
    return {"{iid}": w.instance, "{wh}": hook.json()["id"], "{jt}": token.json()["id"], "{prj}": project["id"]}


def _state(w: World) -> Any:
    """What the cases could have written: the attacker's instances, webhooks, the join tokens and projects."""
    admin = auth(ADMIN_KEY)
    return (w.client.get("/v1/instances", headers=auth(w.attacker)).json(),
            w.client.get("/v1/webhooks", headers=auth(w.attacker)).json(),
            w.client.get("/v1/join-tokens", headers=admin).json(),
            w.client.get("/v1/projects", headers=admin).json())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_billing_and_webhook_input_is_refused_naming_the_field(client: TestClient, fleet: Fleet,
                                                                       family: str) -> None:
    w = world(client, fleet)
    names = _names(w)
    before = _state(w)
    for method, path, body, status, param in FAMILIES[family]:
        for name, value in names.items():
            path = path.replace(name, value)
        headers = auth(ADMIN_KEY if path.startswith(ADMIN_PATHS) else w.attacker)
        assert_problem(send(client, method, path, body, headers=headers), status, param)
    assert _state(w) == before  # nothing refused was written
    assert_unharmed(w)


@pytest.mark.parametrize("authorization", ["", "Bearer", "Basic dXNlcjpwYXNz", "Bearer cp_nope",
                                           "Bearer " + "x" * 10_000, "Bearer \u00e9\u00e9"])
def test_malformed_credentials_on_the_new_routes_are_401(client: TestClient, authorization: str) -> None:
    client.headers.pop("Authorization")
    headers = {"Authorization": authorization.encode()}  # UTF-8 bytes, as a client could send them
    for method, path in (("GET", "/v1/events"), ("GET", "/v1/usage"), ("GET", "/v1/costs"),
                         ("GET", "/v1/webhooks"), ("POST", "/v1/webhooks"), ("POST", "/v1/join-tokens"),
                         ("GET", "/v1/join-tokens"), ("POST", "/v1/instances/inst_x/extend"),
                         ("PATCH", "/v1/projects/prj_x")):
        assert_problem(client.request(method, path, headers=headers, json={}), 401)


def test_oversize_and_deep_bodies_on_the_new_routes(client: TestClient, fleet: Fleet) -> None:
    w = world(client, fleet)
    names = _names(w)
    before = _state(w)
    for method, path, key in (("POST", "/v1/webhooks", w.attacker), ("PATCH", "/v1/webhooks/{wh}", w.attacker),
                              ("POST", "/v1/instances/{iid}/extend", w.attacker),
                              ("POST", "/v1/join-tokens", ADMIN_KEY), ("PATCH", "/v1/projects/{prj}", ADMIN_KEY)):
        for name, value in names.items():
            path = path.replace(name, value)
        big = '{"description": "' + "x" * OVERSIZE + '"}'
        assert_problem(send(client, method, path, raw=big, headers=auth(key)), 413)
        assert_problem(send(client, method, path, raw=DEEP, headers=auth(key)), (400, 422))
        assert_problem(send(client, method, path, raw='{"hours": NaN, "name": NaN}', headers=auth(key)), 422)
    assert _state(w) == before
    assert_unharmed(w)
