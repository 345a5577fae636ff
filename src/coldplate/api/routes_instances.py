"""Instances: create (idempotent), read, list, update, lifecycle actions, events, wait."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from coldplate.api import responses
from coldplate.api.auth import require, scoped_project, state
from coldplate.api.problems import PROBLEM_RESPONSES, ApiProblem
from coldplate.api.responses import EventList, InstanceList, InstanceOut
from coldplate.api.schemas import MAX_LABELS, ActionIn, InstanceCreate, InstanceUpdate, Ref, instance_view
from coldplate.checked import SafeStr
from coldplate.clock import isoformat
from coldplate.domain import pricing
from coldplate.domain.lifecycle import FINAL, Status
from coldplate.services import actions, budgets, idempotency, instances, outbox
from coldplate.services.instances import InstanceRequest, PortRequest, VolumeRequest
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/instances", responses=PROBLEM_RESPONSES)
reader = require("instances:read")
writer = require("instances:write")


def _request(body: InstanceCreate) -> InstanceRequest:
    return InstanceRequest(
        name=body.name, gpu=body.gpu, gpu_count=body.gpu_count, vcpus=body.vcpus, memory_gb=body.memory_gb,
        disk_gb=body.disk_gb, region=body.region, hostnode_id=body.hostnode_id, image=body.image, cmd=body.cmd,
        entrypoint=body.entrypoint, env=body.env, ssh_keys=body.ssh_keys, ssh_key_ids=body.ssh_key_ids,
        ports=[PortRequest(p.internal_port, p.external_port) for p in body.ports], labels=body.labels,
        spot=body.spot, duration_hours=body.duration_hours, max_hours=body.max_hours,
        volumes=[VolumeRequest(v.name, v.mount_path, v.readonly) for v in body.volumes],
        cloud_init=None if body.cloud_init is None else body.cloud_init.model_dump(exclude_defaults=True),
        max_price_micros=None if body.max_price_per_hour is None else pricing.to_micros(body.max_price_per_hour),
        budget_limit_micros=None if body.budget_limit is None else pricing.to_micros(body.budget_limit),
    )


@router.post("", status_code=201, response_model=InstanceOut)
def create_instance(body: InstanceCreate, request: Request, principal: Principal = Depends(writer),
                    idempotency_key: SafeStr | None = Header(default=None, max_length=255)) -> JSONResponse:
    app = state(request)
    digest = idempotency.request_hash(body.model_dump(mode="json"))

    def create(session: Session) -> JSONResponse:
        record = None
        if idempotency_key:
            replayed = idempotency.replay(session, project_id=principal.project_id, key=idempotency_key,
                                          digest=digest)
            if replayed is not None:
                return JSONResponse(replayed.body, status_code=replayed.status_code)
            record = idempotency.claim(session, clock=app.clock, project_id=principal.project_id,
                                       key=idempotency_key, digest=digest)
        inst = instances.create(session, clock=app.clock, project_id=principal.project_id, req=_request(body))
        view = instance_view(inst, app.clock.now())
        if record is not None:
            idempotency.remember(session, record=record, status_code=201, body=view)
        return JSONResponse(view, status_code=201)

    return app.transact(create)


@router.get("", response_model=InstanceList)
def list_instances(request: Request, principal: Principal = Depends(reader),
                   status: SafeStr | None = Query(default=None, max_length=200),
                   label: list[SafeStr] = Query(default=[], max_length=MAX_LABELS),
                   limit: int = Query(default=50, ge=1, le=500),
                   cursor: SafeStr | None = Query(default=None, max_length=500)) -> dict[str, Any]:
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    for value in statuses or []:
        if value not in Status.__members__.values():
            raise ApiProblem(422, "validation_error", f"unknown status {value!r}", param="status")
    labels: dict[str, str] = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiProblem(422, "validation_error", "label filters look like key=value", param="label")
        labels[key] = value
    app = state(request)
    with app.read() as session:
        rows, next_cursor = instances.list_page(session, project_id=scoped_project(principal), statuses=statuses,
                                                labels=labels, limit=limit, cursor=cursor)
        now = app.clock.now()
        return {"data": responses.rows(rows, lambda i: instance_view(i, now), InstanceOut), "next_cursor": next_cursor}


@router.get("/{ref}", response_model=InstanceOut)
def get_instance(ref: Ref, request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    app = state(request)
    with app.read() as session:
        return instance_view(instances.get(session, project_id=scoped_project(principal), ref=ref), app.clock.now())


@router.patch("/{ref}", response_model=InstanceOut)
def update_instance(ref: Ref, body: InstanceUpdate, request: Request,
                    principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)

    def update(session: Session) -> dict[str, Any]:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref, for_update=True)
        if "budget_limit" in body.model_fields_set:
            limit = None if body.budget_limit is None else pricing.to_micros(body.budget_limit)
            budgets.set_instance_limit(session, clock=app.clock, inst=inst, limit_micros=limit)
        return instance_view(instances.update(session, clock=app.clock, inst=inst, name=body.name,
                                              labels=body.labels), app.clock.now())

    return app.transact(update)


def _act(request: Request, principal: Principal, ref: str, action: str, body: ActionIn | None) -> dict[str, Any]:
    app = state(request)
    args = body or ActionIn()

    def act(session: Session) -> dict[str, Any]:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref, for_update=True)
        if action == "stop":
            actions.stop(session, clock=app.clock, inst=inst, force=args.force, grace_seconds=args.grace_seconds)
        elif action == "start":
            actions.start(session, clock=app.clock, inst=inst)
        elif action == "restart":
            actions.restart(session, clock=app.clock, inst=inst, force=args.force, grace_seconds=args.grace_seconds)
        else:
            actions.terminate(session, clock=app.clock, inst=inst, force=args.force,
                              grace_seconds=args.grace_seconds)
        return instance_view(inst, app.clock.now())

    return app.transact(act)


@router.post("/{ref}/stop", response_model=InstanceOut)
def stop(ref: Ref, request: Request, body: ActionIn | None = None,
         principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "stop", body)


@router.post("/{ref}/start", response_model=InstanceOut)
def start(ref: Ref, request: Request, body: ActionIn | None = None,
          principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "start", body)


@router.post("/{ref}/restart", response_model=InstanceOut)
def restart(ref: Ref, request: Request, body: ActionIn | None = None,
            principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "restart", body)


@router.post("/{ref}/terminate", response_model=InstanceOut)
def terminate(ref: Ref, request: Request, body: ActionIn | None = None,
              principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "terminate", body)


@router.delete("/{ref}", response_model=InstanceOut)
def delete(ref: Ref, request: Request, force: bool = False, principal: Principal = Depends(writer)) -> Response:
    view = _act(request, principal, ref, "terminate", ActionIn(force=force))
    return JSONResponse(view, status_code=200)


@router.get("/{ref}/events", response_model=EventList)
def events(ref: Ref, request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref)
        return {"data": [{"id": e.id, "type": e.type, "from_status": e.from_status, "to_status": e.to_status,
                          "reason": e.reason, "data": e.data, "created_at": isoformat(e.created_at)}
                         for e in outbox.instance_events(session, instance_id=inst.id)]}


@router.get("/{ref}/wait", response_model=InstanceOut)
async def wait(ref: Ref, request: Request, principal: Principal = Depends(reader),
               status: Status = Status.READY, timeout: float = Query(default=60, ge=0, le=300)) -> dict[str, Any]:
    app = state(request)

    def read() -> dict[str, Any]:
        with app.read() as session:
            return instance_view(instances.get(session, project_id=scoped_project(principal), ref=ref),
                                 app.clock.now())

    view = await run_in_threadpool(read)
    waiter = app.signals.subscribe(view["id"])
    try:
        deadline = time.monotonic() + timeout
        while True:
            waiter.clear()  # before the read, so a commit after it still wakes us
            view = await run_in_threadpool(read)
            if view["status"] == status.value:
                return view
            if Status(view["status"]) in FINAL or (view["status"] == "failed" and status is not Status.FAILED):
                raise ApiProblem(409, "invalid_state", f"instance is {view['status']}; it will not become {status}",
                                 param="status")
            left = deadline - time.monotonic()
            if left <= 0 or app.signals.closing:
                raise ApiProblem(408, "wait_timeout", f"instance is still {view['status']} after {timeout:g}s",
                                 param="timeout")
            await app.signals.wait(waiter, left)
    finally:
        app.signals.unsubscribe(view["id"], waiter)
