"""The agent protocol: register, heartbeat, long-poll for assignments, report transitions."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from coldplate import protocol
from coldplate.api.agent_gate import Pulse, gate
from coldplate.api.arrival import arrived
from coldplate.api.auth import agent_host, agent_secret, optional_bearer, state
from coldplate.api.problems import PROBLEM_RESPONSES, ApiProblem
from coldplate.api.schemas import Ref
from coldplate.checked import Int64, SafeStr
from coldplate.clock import isoformat
from coldplate.domain.lifecycle import Status
from coldplate.services import actions, agent_tasks, hostnodes, instances
from coldplate.state import HOST_TIMEOUT_BEATS, AppState

router = APIRouter(prefix="/v1/agent", responses=PROBLEM_RESPONSES)


@router.post("/register", status_code=201)
async def register(body: protocol.Registration, request: Request,
                   credential: str | None = Depends(optional_bearer)) -> protocol.Registered:
    app = state(request)
    if body.heartbeat_timeout_seconds is None:  # the agent leaves it to the server: three of its beats
        body = body.model_copy(update={"heartbeat_timeout_seconds": app.settings.host_timeout_s})

    def enrol(session: Session) -> protocol.Registered:
        host, token = hostnodes.register(session, clock=app.clock, spec=body, join_token=body.join_token,
                                         credential=credential)
        return protocol.Registered(hostnode_id=host.id, agent_token=token,
                                   heartbeat_interval_seconds=_heartbeat_interval(app, host.heartbeat_timeout_s))

    return await gate(request).transact(enrol)


def _heartbeat_interval(app: AppState, heartbeat_timeout_s: float) -> float:
    """The server's interval, or shorter where the host's own timeout asks for it (three beats)."""
    return min(app.settings.heartbeat_interval_s, heartbeat_timeout_s / HOST_TIMEOUT_BEATS)


@router.post("/heartbeat")
async def heartbeat(body: protocol.Heartbeat, request: Request,
                    token: str = Depends(agent_secret)) -> protocol.HeartbeatAck:
    """The token is checked by the heartbeat's own UPDATE, written with the others that arrived
    meanwhile (agent_gate): the call a large fleet makes most."""
    app = state(request)
    seen = await gate(request).beat(Pulse(token, [(m.instance_id, m.values) for m in body.metrics]))
    return protocol.HeartbeatAck(status=seen.status, server_time=isoformat(app.clock.now()),
                                 heartbeat_interval_seconds=_heartbeat_interval(app, seen.heartbeat_timeout_s))


@router.get("/assignments")
async def assignments(request: Request, host_id: str = Depends(agent_host),
                      since: Annotated[Int64, Query(ge=-1)] = -1,
                      wait: float = Query(default=25, ge=0, le=60, allow_inf_nan=False),
                      server_id: Annotated[SafeStr | None, Query(max_length=64)] = None) -> protocol.Assignments:
    """Answers once the host's assignment version passes `since`, or at the deadline. The last
    answer read for the host is kept (wakeups.Signals) until a commit touches the host: an agent
    asking again, or a deadline passing, reads nothing from the database."""
    app = state(request)
    signals = app.signals
    waiter = signals.subscribe(host_id)
    try:
        deadline = arrived(request) + wait  # not from now: the token check may have queued for a thread
        while True:
            waiter.clear()  # before the check, so a commit after it still wakes us
            known = signals.known(host_id)
            answer = known if isinstance(known, protocol.Assignments) else None
            if answer is None:
                stamp = signals.stamp()
                answer = await gate(request).assignments(host_id)
                signals.remember(host_id, answer, stamp)
            left = deadline - time.monotonic()
            # another server_id than the agent last saw: this server restarted (or is another replica);
            # answer now, so the agent learns it and heartbeats, instead of after a whole wait
            moved = server_id is not None and server_id != app.origin
            if answer.version > since or left <= 0 or signals.closing or moved:
                return answer
            await signals.wait(waiter, left)
    finally:
        signals.unsubscribe(host_id, waiter)


@router.post("/instances/{instance_id}/transition")
async def transition(instance_id: Ref, body: protocol.TransitionReport, request: Request,
                     host_id: str = Depends(agent_host)) -> protocol.TransitionAck:
    app = state(request)

    def report(session: Session) -> protocol.TransitionAck:
        inst = instances.lock(session, instance_id)  # instance before hostnode: the one lock order
        if inst is None or inst.hostnode_id != host_id:
            raise ApiProblem(404, "not_found", f"instance {instance_id} is not on this hostnode", param="instance_id")
        current = hostnodes.get_hostnode(session, host_id)
        actions.report(session, clock=app.clock, host=current, inst=inst, status=Status(body.status),
                       failure_reason=body.failure_reason, exit_code=body.exit_code, exit_message=body.exit_message)
        return protocol.TransitionAck(status=Status(inst.status))

    return await gate(request).transact(report)


@router.post("/tasks/{task_id}/result")
async def task_result(task_id: Ref, body: protocol.TaskResult, request: Request,
                      host_id: str = Depends(agent_host)) -> protocol.TaskAck:
    app = state(request)

    def complete(session: Session) -> protocol.TaskAck:
        current = hostnodes.get_hostnode(session, host_id)
        agent_tasks.complete(session, clock=app.clock, host=current, task_id=task_id,
                             result=body.model_dump(exclude_none=True))
        return protocol.TaskAck(status="done")

    return await gate(request).transact(complete)
