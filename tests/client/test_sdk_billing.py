"""SDK billing calls: request shapes and error mapping (stand-in server: httpx.MockTransport).
The same calls against the real server are in tests/e2e/test_billing_e2e.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from coldplate import AsyncClient, Client
from coldplate.client import BudgetExceededError
from tests.client.test_sdk import INSTANCE, problem

ENTRY = {"id": "led_1", "instance_id": "inst_1", "kind": "compute", "period_start": "2026-01-01T00:00:00Z",
         "period_end": "2026-01-01T00:01:00Z", "seconds": 60, "rate_per_hour": "2.200000", "amount": "0.036667",
         "gpu_type": "h100-80gb", "labels": {}}


def test_clearing_a_budget_limit_sends_an_explicit_null() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**INSTANCE, "budget_limit": None})

    client = Client("http://cp", "k", transport=httpx.MockTransport(handler))
    client.set_budget_limit("a", None)
    client.set_budget_limit("a", "5.00")
    assert [json.loads(r.content) for r in seen] == [{"budget_limit": None}, {"budget_limit": "5.00"}]


def test_usage_follows_cursors_and_csv_asks_for_csv() -> None:
    pages = {None: {"data": [ENTRY], "next_cursor": "c2"}, "c2": {"data": [ENTRY], "next_cursor": None}}
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.params.get("format") == "csv":
            return httpx.Response(200, text="id,amount\n", headers={"content-type": "text/csv"})
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    client = Client("http://cp", "k", transport=httpx.MockTransport(handler))
    entries = client.usage(instance_id="inst_1", since="2026-01-01T00:00:00Z")
    assert [e.amount for e in entries] == ["0.036667", "0.036667"]
    assert seen[0].params["instance_id"] == "inst_1" and seen[1].params["cursor"] == "c2"
    assert client.costs_csv(month="2026-01") == "id,amount\n"
    assert seen[-1].path == "/v1/costs" and seen[-1].params["month"] == "2026-01"


def test_a_spent_budget_is_a_typed_error_in_both_clients() -> None:
    transport = httpx.MockTransport(lambda _: problem(402, "budget_exceeded", "monthly_budget"))
    with pytest.raises(BudgetExceededError) as sync_error:
        Client("http://cp", "k", transport=transport).create_instance(name="a", gpu="h100")
    assert sync_error.value.status == 402

    async def create() -> None:
        async with AsyncClient("http://cp", "k", transport=transport) as client:
            await client.create_instance(name="a", gpu="h100")

    with pytest.raises(BudgetExceededError):
        asyncio.run(create())


def test_project_budget_and_extend_bodies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.startswith("/v1/projects"):
            return httpx.Response(200, json={"id": "prj_1", "name": "p", "created_at": "x", "monthly_budget": None})
        return httpx.Response(200, json=INSTANCE)

    client = Client("http://cp", "k", transport=httpx.MockTransport(handler))
    client.set_project_budget("prj_1", monthly_budget="500.00", on_budget_exceeded="stop_instances")
    client.set_project_budget("prj_1", monthly_budget=None)
    client.extend_instance("a", hours=3)
    assert [(r.method, r.url.path, json.loads(r.content)) for r in seen] == [
        ("PATCH", "/v1/projects/prj_1", {"monthly_budget": "500.00", "on_budget_exceeded": "stop_instances"}),
        ("PATCH", "/v1/projects/prj_1", {"monthly_budget": None}),
        ("POST", "/v1/instances/a/extend", {"hours": 3})]
