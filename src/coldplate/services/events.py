"""The public form of outbox events, shared by `GET /v1/events` and the webhook dispatcher:
`{"id", "seq", "type", "timestamp", "data"}`.

`instance.lifecycle` events carry the instance as `GET /v1/instances/{id}` shows it (read when the
event is rendered: the dispatcher renders within moments of the commit, and stores the body so
every retry sends the same bytes), with `status` and `status_reason` as of the transition, plus
`previous_status`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.clock import as_utc, isoformat
from coldplate.db.tables import Event, Instance
from coldplate.domain.lifecycle import DESIRED_CHANGED
from coldplate.services.errors import InvalidInput
from coldplate.views import instance_view

LIFECYCLE = "instance.lifecycle"
# Every type a webhook may subscribe to (later features add theirs here).
EVENT_TYPES = (
    LIFECYCLE, "instance.updated", "instance.reservation_extended", DESIRED_CHANGED, "instance.budget_threshold",
    "project.budget_exceeded", "webhook.disabled", "hostnode.registered", "hostnode.online", "hostnode.updated",
    "hostnode.offline",
)


def render(event: Event, instance: Instance | None) -> dict[str, Any]:
    data: dict[str, Any]
    if event.type == LIFECYCLE:
        data = instance_view(instance) if instance is not None else {"id": event.instance_id}
        data.update(status=event.to_status, status_reason=event.reason, previous_status=event.from_status)
        if event.data.get("failure_reason"):
            data["failure_reason"] = event.data["failure_reason"]
    else:
        data = dict(event.data)
        if event.instance_id is not None:
            data.setdefault("instance_id", event.instance_id)
    return {"id": event.id, "seq": event.seq, "type": event.type, "timestamp": isoformat(event.created_at),
            "data": data}


def render_all(session: Session, events: list[Event]) -> list[dict[str, Any]]:
    """Render a batch, reading the instances it names in one query."""
    ids = {e.instance_id for e in events if e.type == LIFECYCLE and e.instance_id is not None}
    instances = {i.id: i for i in session.scalars(select(Instance).where(Instance.id.in_(ids)))} if ids else {}
    return [render(e, instances.get(e.instance_id or "")) for e in events]


def body(payload: dict[str, Any]) -> str:
    """The exact bytes sent (and signed): compact JSON."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def seq_cursor(cursor: str) -> int:
    """An event `seq` a list answered as its cursor (events and webhook deliveries page by it)."""
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:  # "²" is a digit to isdigit()
        raise InvalidInput("cursor is not one this API returned", param="cursor")
    return int(cursor)


def list_page(session: Session, *, project_id: str | None, type: str | None, instance_id: str | None,
              since: datetime | None, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Oldest first (by `seq`); the cursor is the last `seq` returned."""
    query = select(Event)
    if project_id is not None:
        query = query.where(Event.project_id == project_id)
    if type is not None:
        query = query.where(Event.type == type)
    if instance_id is not None:
        query = query.where(Event.instance_id == instance_id)
    if since is not None:
        query = query.where(Event.created_at >= as_utc(since))
    if cursor is not None:
        query = query.where(Event.seq > seq_cursor(cursor))
    rows = list(session.scalars(query.order_by(Event.seq).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].seq) if len(rows) > limit else None
    return render_all(session, rows[:limit]), next_cursor
