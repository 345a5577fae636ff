"""The SDK's events and webhooks methods against the real app (SQLite and PostgreSQL) and a real
receiver: sync `Client` over the TestClient's transport, `AsyncClient` over an ASGI transport."""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient

from coldplate import AsyncClient, Client
from coldplate.client import NotFoundError, ValidationError
from coldplate.loops import webhooks as dispatcher
from coldplate.state import AppState
from tests.conftest import Fleet
from tests.webhook_receiver import receiving


def test_sdk_webhook_round_trip(client: TestClient, fleet: Fleet, project_key: str, state: AppState) -> None:
    state.settings.allow_private_webhooks = True
    sdk = Client("http://testserver", project_key, transport=client._transport)
    with receiving() as receiver:
        hook = sdk.create_webhook(receiver.url, event_types=["instance.lifecycle"], description="sdk")
        assert hook.secret is not None and hook.secret.startswith("whsec_")
        fleet.host("h-sdk")
        sdk.create_instance(name="sdk-1", gpu="h100")
        dispatcher.run_once(state)
        (payload,) = receiver.payloads(hook.secret)
        events = sdk.list_events(type="instance.lifecycle")
        assert [e.id for e in events] == [payload["id"]] and events[0].data["status"] == "provisioning"
        (delivery,) = sdk.list_webhook_deliveries(hook.id)
        assert delivery.status == "delivered" and delivery.http_status == 200
        assert sdk.redeliver_webhook(hook.id, delivery.id).status == "pending"
        dispatcher.run_once(state)
        assert [r.webhook_id for r in receiver.received] == [delivery.id, delivery.id]
        assert sdk.update_webhook(hook.id, enabled=False, event_types=[]).enabled is False
        assert sdk.get_webhook(hook.id).event_types == []
        rotated = sdk.rotate_webhook_secret(hook.id)
        assert rotated.secret not in (None, hook.secret)
        assert [h.id for h in sdk.list_webhooks()] == [hook.id]
        sdk.delete_webhook(hook.id)
        try:
            sdk.get_webhook(hook.id)
            raise AssertionError("deleted webhook still found")
        except NotFoundError:
            pass
        try:
            sdk.create_webhook("gopher://x")
            raise AssertionError("bad URL accepted")
        except ValidationError as exc:
            assert exc.param == "url"


def test_async_sdk_lists_webhooks_and_events(client: TestClient, project_key: str) -> None:
    async def main() -> tuple[str, int, int]:
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncClient("http://testserver", project_key, transport=transport) as sdk:
            hook = await sdk.create_webhook("https://hooks.example.com/a", event_types=["webhook.disabled"])
            listed = await sdk.list_webhooks()
            return hook.id, len(listed), len(await sdk.list_events())

    hook_id, count, events = asyncio.run(main())
    assert hook_id.startswith("wh_") and count == 1 and events == 0
