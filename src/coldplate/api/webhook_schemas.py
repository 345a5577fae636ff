"""Webhook request bodies and the JSON views of webhooks and their deliveries."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from coldplate.api.schemas import Strict
from coldplate.clock import isoformat
from coldplate.db.tables import Webhook, WebhookDelivery
from coldplate.services.events import EVENT_TYPES


def _event_types(types: list[str] | None) -> list[str] | None:
    for i, value in enumerate(types or []):
        if value not in EVENT_TYPES:
            raise ValueError(f"event_types[{i}] {value!r} is not an event type; known: {', '.join(EVENT_TYPES)}")
    return types


class WebhookIn(Strict):
    url: str = Field(min_length=1, max_length=2000)
    event_types: list[str] = Field(default_factory=list, max_length=len(EVENT_TYPES))  # empty: every type
    description: str = Field(default="", max_length=500)
    enabled: bool = True

    _types = field_validator("event_types")(_event_types)


class WebhookPatch(Strict):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[str] | None = Field(default=None, max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None

    _types = field_validator("event_types")(_event_types)


def webhook_view(hook: Webhook, *, secret: bool = False) -> dict[str, Any]:
    view = {
        "id": hook.id, "project_id": hook.project_id, "url": hook.url, "event_types": hook.event_types,
        "description": hook.description, "enabled": hook.enabled, "disabled_reason": hook.disabled_reason,
        "failing_since": isoformat(hook.failing_since),
        "previous_secret_expires_at": isoformat(hook.previous_secret_expires_at),
        "created_at": isoformat(hook.created_at), "updated_at": isoformat(hook.updated_at),
    }
    if secret:  # only on create and rotate-secret
        view["secret"] = hook.secret
    return view


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id, "webhook_id": row.webhook_id, "event_seq": row.event_seq, "event_type": row.event_type,
        "status": row.status, "attempts": row.attempts, "last_attempt_at": isoformat(row.last_attempt_at),
        "http_status": row.last_status_code, "latency_ms": row.last_latency_ms, "response": row.last_response,
        "error": row.last_error, "next_attempt_at": isoformat(row.next_attempt_at),
        "delivered_at": isoformat(row.delivered_at), "created_at": isoformat(row.created_at),
    }
