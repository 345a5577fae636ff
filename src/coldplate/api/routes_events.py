"""The project's event log: every outbox event, oldest first (`instances:read`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from coldplate.api import responses
from coldplate.api.auth import require, scoped_project, state
from coldplate.api.problems import PROBLEM_RESPONSES
from coldplate.api.query import Cursor, Since
from coldplate.api.responses import ProjectEventList, ProjectEventOut
from coldplate.checked import SafeStr
from coldplate.services import events
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/events", responses=PROBLEM_RESPONSES)


@router.get("", response_model=ProjectEventList)
def list_events(request: Request, principal: Principal = Depends(require("instances:read")),
                type: SafeStr | None = Query(default=None, max_length=60),
                instance_id: SafeStr | None = Query(default=None, max_length=40),
                since: Since = None, limit: int = Query(default=100, ge=1, le=1000),
                cursor: Cursor = None) -> dict[str, Any]:
    with state(request).read() as session:
        data, next_cursor = events.list_page(session, project_id=scoped_project(principal), type=type,
                                             instance_id=instance_id, since=since, cursor=cursor, limit=limit)
        return {"data": responses.rows(data, lambda d: d, ProjectEventOut), "next_cursor": next_cursor}
