"""Webhook endpoints and their delivery log (`webhooks:read` / `webhooks:write`)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from coldplate.api import responses
from coldplate.api.auth import require, scoped_project, state
from coldplate.api.problems import PROBLEM_RESPONSES
from coldplate.api.query import Cursor
from coldplate.api.responses import DeliveryList, DeliveryOut, WebhookCreated, WebhookList, WebhookOut
from coldplate.api.schemas import Ref
from coldplate.api.webhook_schemas import WebhookIn, WebhookPatch, delivery_view, webhook_view
from coldplate.services import deliveries, destinations, outbox, signals, webhooks
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/webhooks", responses=PROBLEM_RESPONSES)
reader = require("webhooks:read")
writer = require("webhooks:write")


@router.post("", status_code=201, response_model=WebhookCreated)
def create(body: WebhookIn, request: Request, principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    destinations.check_at_create(body.url, allow_private=app.settings.allow_private_webhooks)  # DNS: before the tx
    with app.tx() as session:
        hook = webhooks.create(session, clock=app.clock, project_id=principal.project_id, url=body.url,
                               event_types=body.event_types, description=body.description, enabled=body.enabled)
        return webhook_view(hook, secret=True)


@router.get("", response_model=WebhookList)
def list_(request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        hooks = webhooks.list_hooks(session, project_id=principal.project_id)
        return {"data": responses.rows(hooks, webhook_view, WebhookOut)}


@router.get("/{webhook_id}", response_model=WebhookOut)
def get(webhook_id: Ref, request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        return webhook_view(webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
def update(webhook_id: Ref, body: WebhookPatch, request: Request,
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
def delete(webhook_id: Ref, request: Request, principal: Principal = Depends(writer)) -> Response:
    with state(request).tx() as session:
        webhooks.delete(session, hook=webhooks.get(session, project_id=scoped_project(principal),
                                                   webhook_id=webhook_id))
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookCreated)
def rotate_secret(webhook_id: Ref, request: Request, principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        return webhook_view(webhooks.rotate_secret(session, clock=app.clock, hook=hook), secret=True)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
def list_deliveries(webhook_id: Ref, request: Request, principal: Principal = Depends(reader),
                    status: Literal["pending", "delivered", "failed"] | None = None,
                    limit: int = Query(default=50, ge=1, le=500),
                    cursor: Cursor = None) -> dict[str, Any]:
    with state(request).read() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        rows, next_cursor = deliveries.list_page(session, hook=hook, status=status, cursor=cursor, limit=limit)
        return {"data": responses.rows(rows, delivery_view, DeliveryOut), "next_cursor": next_cursor}


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryOut)
def redeliver(webhook_id: Ref, delivery_id: Ref, request: Request,
              principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        hook = webhooks.get(session, project_id=scoped_project(principal), webhook_id=webhook_id)
        row = deliveries.redeliver(session, clock=app.clock, hook=hook, delivery_id=delivery_id)
        signals.touch(session, outbox.OUTBOX)  # wake the dispatcher at commit
        return delivery_view(row)
