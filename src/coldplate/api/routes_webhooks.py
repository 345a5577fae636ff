"""Webhook endpoints and their delivery log (`webhooks:read` / `webhooks:write`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from coldplate.api.auth import require, scoped_project, state
from coldplate.api.webhook_schemas import WebhookIn, WebhookPatch, delivery_view, webhook_view
from coldplate.services import deliveries, destinations, outbox, signals, webhooks
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/webhooks")
reader = require("webhooks:read")
writer = require("webhooks:write")


@router.post("", status_code=201)
def create(body: WebhookIn, request: Request, principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    destinations.check_at_create(body.url, allow_private=app.settings.allow_private_webhooks)  # DNS: before the tx
    with app.tx() as session:
        hook = webhooks.create(session, clock=app.clock, project_id=principal.project_id, url=body.url,
                               event_types=body.event_types, description=body.description, enabled=body.enabled)
        return webhook_view(hook, secret=True)


@router.get("")
def list_(request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        return {"data": [webhook_view(h) for h in webhooks.list_hooks(session, project_id=principal.project_id)]}


@router.get("/{webhook_id}")
def get(webhook_id: str, request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        return webhook_view(webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id))


@router.patch("/{webhook_id}")
def update(webhook_id: str, body: WebhookPatch, request: Request,
           principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    if body.url is not None:
        destinations.check_at_create(body.url, allow_private=app.settings.allow_private_webhooks)
    with app.tx() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        return webhook_view(webhooks.update(session, clock=app.clock, hook=hook, url=body.url,
                                            event_types=body.event_types, description=body.description,
                                            enabled=body.enabled))


@router.delete("/{webhook_id}", status_code=204)
def delete(webhook_id: str, request: Request, principal: Principal = Depends(writer)) -> Response:
    with state(request).tx() as session:
        webhooks.delete(session, hook=webhooks.get(session, project_id=scoped_project(principal),
                                                   webhook_id=webhook_id))
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret")
def rotate_secret(webhook_id: str, request: Request, principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        return webhook_view(webhooks.rotate_secret(session, clock=app.clock, hook=hook), secret=True)


@router.get("/{webhook_id}/deliveries")
def list_deliveries(webhook_id: str, request: Request, principal: Principal = Depends(reader),
                    status: Literal["pending", "delivered", "failed"] | None = None,
                    limit: int = Query(default=50, ge=1, le=500),
                    cursor: str | None = Query(default=None, max_length=40)) -> dict[str, Any]:
    with state(request).read() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        rows, next_cursor = deliveries.list_page(session, hook=hook, status=status, cursor=cursor, limit=limit)
        return {"data": [delivery_view(r) for r in rows], "next_cursor": next_cursor}


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(webhook_id: str, delivery_id: str, request: Request,
              principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        row = deliveries.redeliver(session, clock=app.clock, hook=hook, delivery_id=delivery_id)
        signals.touch(session, outbox.OUTBOX)  # wake the dispatcher at commit
        return delivery_view(row)
