"""The project's event log: every outbox event, oldest first (`instances:read`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from coldplate.api.auth import require, scoped_project, state
from coldplate.services import events
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/events")


@router.get("")
def list_events(request: Request, principal: Principal = Depends(require("instances:read")),
                type: str | None = Query(default=None, max_length=60),
                instance_id: str | None = Query(default=None, max_length=40),
                since: datetime | None = None, limit: int = Query(default=100, ge=1, le=1000),
                cursor: str | None = Query(default=None, max_length=40)) -> dict[str, Any]:
    with state(request).read() as session:
        data, next_cursor = events.list_page(session, project_id=scoped_project(principal), type=type,
                                             instance_id=instance_id, since=since, cursor=cursor, limit=limit)
        return {"data": data, "next_cursor": next_cursor}
