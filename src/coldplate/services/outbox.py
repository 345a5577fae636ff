"""Writes outbox events; every state change calls this in its own transaction."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Event
from coldplate.ids import new_id
from coldplate.services import signals

OUTBOX = "outbox"  # the wake-up key of every new event: the webhook dispatcher waits on it
INSERT_EVENT = insert(cast(Table, Event.__table__))  # built once: a Core insert costs a third of session.add


def record(
    session: Session, *, clock: Clock, project_id: str, type: str, instance_id: str | None = None,
    from_status: str | None = None, to_status: str | None = None, reason: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Insert the event now, in the caller's transaction (so its `seq` orders it among the others)."""
    session.connection().execute(INSERT_EVENT, {
        "id": new_id("evt"), "project_id": project_id, "instance_id": instance_id, "type": type,
        "from_status": from_status, "to_status": to_status, "reason": reason, "data": data or {},
        "created_at": clock.now(),
    })
    signals.touch(session, OUTBOX)


def instance_events(session: Session, *, instance_id: str) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.instance_id == instance_id).order_by(Event.seq)))
