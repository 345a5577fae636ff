"""Webhook request bodies and the JSON views of webhooks and their deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from coldplate.api.schemas import Strict
from coldplate.checked import SafeStr
from coldplate.clock import isoformat
from coldplate.db.tables import Webhook, WebhookDelivery
from coldplate.services.events import EVENT_TYPES


def _event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(f"{value!r} is not an event type; known: {', '.join(EVENT_TYPES)}")
    return value


EventType = Annotated[SafeStr, Field(max_length=60), AfterValidator(_event_type)]
EventTypes = Annotated[list[EventType], Field(max_length=len(EVENT_TYPES))]  # empty: every type
Url = Annotated[SafeStr, Field(min_length=1, max_length=2000)]  # the column's length
Description = Annotated[SafeStr, Field(max_length=500)]


class WebhookIn(Strict):
    url: Url
    event_types: EventTypes = Field(default_factory=list)
    description: Description = ""
    enabled: bool = True


class WebhookPatch(Strict):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None


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
