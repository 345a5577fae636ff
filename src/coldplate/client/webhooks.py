"""Events and webhooks in the SDK: their models and operations (kept apart from the instance ones)."""

from __future__ import annotations

from typing import Any

from coldplate.client.models import Model
from coldplate.client.operations import Op, _clean, many, nothing, one


class Event(Model):
    """`data` is the instance object (plus `previous_status`) for `instance.lifecycle`."""

    id: str
    seq: int
    type: str
    timestamp: str
    data: dict[str, Any]


class Webhook(Model):
    id: str
    url: str
    event_types: list[str] = []
    description: str = ""
    enabled: bool
    disabled_reason: str | None = None
    secret: str | None = None  # only on create and rotate-secret
    created_at: str


class Delivery(Model):
    id: str
    webhook_id: str
    event_seq: int
    event_type: str
    status: str
    attempts: int
    http_status: int | None = None
    latency_ms: int | None = None
    response: str | None = None
    error: str | None = None
    next_attempt_at: str | None = None
    last_attempt_at: str | None = None


def _page(model: type[Model]) -> Any:
    return lambda body: (many(model)(body), body.get("next_cursor"))


def events_page(type: str | None, instance_id: str | None, since: str | None,
                cursor: str | None) -> Op[tuple[list[Event], str | None]]:
    params = _clean({"type": type, "instance_id": instance_id, "since": since, "cursor": cursor, "limit": 1000})
    return Op("GET", "/v1/events", _page(Event), params=params)


def create_webhook(url: str, event_types: list[str] | None, description: str | None,
                   enabled: bool | None) -> Op[Webhook]:
    body = _clean({"url": url, "event_types": event_types, "description": description, "enabled": enabled})
    return Op("POST", "/v1/webhooks", one(Webhook), json=body)


def list_webhooks() -> Op[list[Webhook]]:
    return Op("GET", "/v1/webhooks", many(Webhook))


def get_webhook(webhook_id: str) -> Op[Webhook]:
    return Op("GET", f"/v1/webhooks/{webhook_id}", one(Webhook))


def update_webhook(webhook_id: str, fields: dict[str, Any]) -> Op[Webhook]:
    return Op("PATCH", f"/v1/webhooks/{webhook_id}", one(Webhook), json=_clean(fields))


def delete_webhook(webhook_id: str) -> Op[None]:
    return Op("DELETE", f"/v1/webhooks/{webhook_id}", nothing)


def rotate_webhook_secret(webhook_id: str) -> Op[Webhook]:
    return Op("POST", f"/v1/webhooks/{webhook_id}/rotate-secret", one(Webhook))


def deliveries_page(webhook_id: str, status: str | None, cursor: str | None
                    ) -> Op[tuple[list[Delivery], str | None]]:
    return Op("GET", f"/v1/webhooks/{webhook_id}/deliveries", _page(Delivery),
              params=_clean({"status": status, "cursor": cursor, "limit": 500}))


def redeliver(webhook_id: str, delivery_id: str) -> Op[Delivery]:
    return Op("POST", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", one(Delivery))
