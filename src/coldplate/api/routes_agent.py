"""The agent protocol: register, heartbeat, long-poll for assignments, report transitions."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from coldplate.api.auth import agent_host, state
from coldplate.api.problems import ApiProblem
from coldplate.api.schemas import HeartbeatIn, RegisterIn, TaskResultIn, TransitionIn
from coldplate.clock import isoformat
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain import pricing
from coldplate.domain.lifecycle import Status
from coldplate.services import actions, agent_tasks, hostnodes, metrics
from coldplate.services.hostnodes import HostSpec
from coldplate.state import HOST_TIMEOUT_BEATS, AppState

router = APIRouter(prefix="/v1/agent")


def _spec(body: RegisterIn, default_timeout_s: int) -> HostSpec:
    prices = {k: pricing.to_micros(v) for k, v in body.prices.model_dump().items()}
    return HostSpec(
        name=body.name, region=body.region, city=body.location.city, country=body.location.country,
        address=body.address, gpu_model=body.gpu.model, gpu_count=body.gpu.count, gpu_memory_mb=body.gpu.memory_mb,
        gpu_uuids=body.gpu.uuids, vcpus=body.vcpus, memory_gb=body.memory_gb, disk_gb=body.disk_gb,
        port_lo=body.port_range[0], port_hi=body.port_range[1], prices_micros=prices,
        heartbeat_timeout_s=body.heartbeat_timeout_seconds or default_timeout_s, uptime_pct=body.uptime_pct,
    )


@router.post("/register", status_code=201)
def register(body: RegisterIn, request: Request) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        host, token = hostnodes.register(session, clock=app.clock, join_token=body.join_token,
                                         spec=_spec(body, app.settings.host_timeout_s))
        return {"hostnode_id": host.id, "agent_token": token,
                "heartbeat_interval_seconds": _heartbeat_interval(app, host)}


def _heartbeat_interval(app: AppState, host: Hostnode) -> float:
    """The server's interval, or shorter where the host's own timeout asks for it (three beats)."""
    return min(app.settings.heartbeat_interval_s, host.heartbeat_timeout_s / HOST_TIMEOUT_BEATS)


@router.post("/heartbeat")
def heartbeat(body: HeartbeatIn, request: Request, host: Hostnode = Depends(agent_host)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        current = hostnodes.get_hostnode(session, host.id)
        hostnodes.heartbeat(session, clock=app.clock, host=current)
        metrics.record(session, clock=app.clock, host=current,
                       samples=[(m.instance_id, m.values) for m in body.metrics])
        return {"status": current.status, "server_time": isoformat(app.clock.now()),
                "heartbeat_interval_seconds": _heartbeat_interval(app, current)}


def _assignment(inst: Instance) -> dict[str, Any]:
    return {
        "instance_id": inst.id, "project_id": inst.project_id, "name": inst.name, "desired": inst.desired,
        "status": inst.status,
        "image": inst.image, "cmd": inst.cmd, "entrypoint": inst.entrypoint, "env": inst.env,
        "gpu_indices": inst.gpu_indices, "vcpus": inst.vcpus, "memory_gb": inst.memory_gb, "disk_gb": inst.disk_gb,
        "ports": inst.ports, "ssh_port": inst.ssh_port, "ssh_keys": inst.ssh_keys, "volumes": inst.volumes,
        "cloud_init": inst.cloud_init,
        "grace_seconds": inst.grace_seconds, "force": inst.force,
    }


@router.get("/assignments")
async def assignments(request: Request, host: Hostnode = Depends(agent_host),
                      since: int = Query(default=-1, ge=-1), wait: float = Query(default=25, ge=0, le=60)
                      ) -> dict[str, Any]:
    app = state(request)

    def read() -> tuple[int, dict[str, Any]]:
        with app.read() as session:
            current = hostnodes.get_hostnode(session, host.id)
            return current.assignment_version, {
                "assignments": [_assignment(i) for i in hostnodes.assignments(session, host=current)],
                "tasks": [{"id": t.id, "kind": t.kind, "instance_id": t.instance_id, "params": t.params}
                          for t in agent_tasks.pending(session, host=current)],
            }

    signals = app.signals
    waiter = signals.subscribe(host.id)
    try:
        deadline = time.monotonic() + wait
        while True:
            waiter.clear()  # before the check, so a commit after it still wakes us
            left = deadline - time.monotonic()
            known = signals.known_version(host.id)
            if known is None or known > since or left <= 0 or signals.closing:
                stamp = signals.stamp()
                version, work = await run_in_threadpool(read)
                signals.remember(host.id, version, stamp)
                if version > since or left <= 0 or signals.closing:
                    return {"version": version, "server_id": app.origin, **work}
            await signals.wait(waiter, left)
    finally:
        signals.unsubscribe(host.id, waiter)


@router.post("/instances/{instance_id}/transition")
def transition(instance_id: str, body: TransitionIn, request: Request,
               host: Hostnode = Depends(agent_host)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        inst = session.get(Instance, instance_id)
        if inst is None or inst.hostnode_id != host.id:
            raise ApiProblem(404, "not_found", f"instance {instance_id} is not on this hostnode", param="instance_id")
        current = hostnodes.get_hostnode(session, host.id)
        actions.report(session, clock=app.clock, host=current, inst=inst, status=Status(body.status),
                       failure_reason=body.failure_reason, exit_code=body.exit_code, exit_message=body.exit_message)
        return {"status": inst.status}


@router.post("/tasks/{task_id}/result")
def task_result(task_id: str, body: TaskResultIn, request: Request,
                host: Hostnode = Depends(agent_host)) -> dict[str, Any]:
    app = state(request)
    with app.tx() as session:
        current = hostnodes.get_hostnode(session, host.id)
        agent_tasks.complete(session, clock=app.clock, host=current, task_id=task_id,
                             result=body.model_dump(exclude_none=True))
    return {"status": "done"}
