"""Instances: create (idempotent), read, list, update, lifecycle actions, events, wait."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from coldplate.api.auth import require, scoped_project, state
from coldplate.api.problems import ApiProblem
from coldplate.api.schemas import ActionIn, InstanceCreate, InstanceUpdate, instance_view
from coldplate.clock import isoformat
from coldplate.domain import pricing
from coldplate.domain.lifecycle import FINAL, Status
from coldplate.services import actions, budgets, idempotency, instances, outbox
from coldplate.services.instances import InstanceRequest, PortRequest, VolumeRequest
from coldplate.services.projects import Principal

router = APIRouter(prefix="/v1/instances")
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


@router.post("", status_code=201)
def create_instance(body: InstanceCreate, request: Request, principal: Principal = Depends(writer),
                    idempotency_key: str | None = Header(default=None, max_length=255)) -> JSONResponse:
    app = state(request)
    digest = idempotency.request_hash(body.model_dump(mode="json"))
    for attempt in range(2):
        try:
            with app.tx() as session:
                if idempotency_key:
                    record = idempotency.replay(session, project_id=principal.project_id, key=idempotency_key,
                                                digest=digest)
                    if record is not None:
                        return JSONResponse(record.body, status_code=record.status_code)
                inst = instances.create(session, clock=app.clock, project_id=principal.project_id,
                                        req=_request(body))
                view = instance_view(inst, app.clock.now())
                if idempotency_key:
                    idempotency.remember(session, clock=app.clock, project_id=principal.project_id,
                                         key=idempotency_key, digest=digest, status_code=201, body=view)
            return JSONResponse(view, status_code=201)
        except IntegrityError:
            if attempt == 1 or not idempotency_key:
                raise  # a concurrent retry with the same key raced us; the replay above answers it
    raise AssertionError("unreachable")


@router.get("")
def list_instances(request: Request, principal: Principal = Depends(reader),
                   status: str | None = Query(default=None, max_length=200),
                   label: list[str] = Query(default=[]), limit: int = Query(default=50, ge=1, le=500),
                   cursor: str | None = Query(default=None, max_length=500)) -> dict[str, Any]:
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
        return {"data": [instance_view(i, now) for i in rows], "next_cursor": next_cursor}


@router.get("/{ref}")
def get_instance(ref: str, request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    app = state(request)
    with app.read() as session:
        return instance_view(instances.get(session, project_id=scoped_project(principal), ref=ref), app.clock.now())


@router.patch("/{ref}")
def update_instance(ref: str, body: InstanceUpdate, request: Request,
                    principal: Principal = Depends(writer)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref)
        if "budget_limit" in body.model_fields_set:
            limit = None if body.budget_limit is None else pricing.to_micros(body.budget_limit)
            budgets.set_instance_limit(session, clock=app.clock, inst=inst, limit_micros=limit)
        return instance_view(instances.update(session, clock=app.clock, inst=inst, name=body.name,
                                              labels=body.labels), app.clock.now())


def _act(request: Request, principal: Principal, ref: str, action: str, body: ActionIn | None) -> dict[str, Any]:
    app = state(request)
    args = body or ActionIn()
    with app.tx() as session:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref)
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


@router.post("/{ref}/stop")
def stop(ref: str, request: Request, body: ActionIn | None = None,
         principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "stop", body)


@router.post("/{ref}/start")
def start(ref: str, request: Request, body: ActionIn | None = None,
          principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "start", body)


@router.post("/{ref}/restart")
def restart(ref: str, request: Request, body: ActionIn | None = None,
            principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "restart", body)


@router.post("/{ref}/terminate")
def terminate(ref: str, request: Request, body: ActionIn | None = None,
              principal: Principal = Depends(writer)) -> dict[str, Any]:
    return _act(request, principal, ref, "terminate", body)


@router.delete("/{ref}")
def delete(ref: str, request: Request, force: bool = False, principal: Principal = Depends(writer)) -> Response:
    view = _act(request, principal, ref, "terminate", ActionIn(force=force))
    return JSONResponse(view, status_code=200)


@router.get("/{ref}/events")
def events(ref: str, request: Request, principal: Principal = Depends(reader)) -> dict[str, Any]:
    with state(request).read() as session:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref)
        return {"data": [{"id": e.id, "type": e.type, "from_status": e.from_status, "to_status": e.to_status,
                          "reason": e.reason, "data": e.data, "created_at": isoformat(e.created_at)}
                         for e in outbox.instance_events(session, instance_id=inst.id)]}


@router.get("/{ref}/wait")
async def wait(ref: str, request: Request, principal: Principal = Depends(reader),
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
