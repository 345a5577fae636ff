"""Reaching into a running instance: exec and logs, carried by the instance's agent."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from coldplate.api.auth import require, scoped_project, state
from coldplate.api.problems import PROBLEM_RESPONSES, ApiProblem
from coldplate.api.responses import ExecOut, MetricsOut
from coldplate.api.schemas import ExecIn, Ref
from coldplate.clock import isoformat
from coldplate.domain.lifecycle import FINAL, Status
from coldplate.services import agent_tasks, instances, metrics
from coldplate.services.projects import Principal
from coldplate.state import AppState

router = APIRouter(prefix="/v1/instances", responses=PROBLEM_RESPONSES)
AGENT_SLACK_S = 10.0  # how much longer than the command's own timeout we wait for the agent
FOLLOW_POLL_S = 1.0


async def run_task(app: AppState, principal: Principal, ref: str, kind: str, params: dict[str, Any],
                   *, need_running: bool, wait_s: float) -> dict[str, Any]:
    """Queue a task for the instance's agent and wait for its result."""

    def queue() -> str:
        with app.tx() as session:
            inst = instances.get(session, project_id=scoped_project(principal), ref=ref)
            return agent_tasks.create(session, clock=app.clock, inst=inst, kind=kind, params=params,
                                      need_running=need_running).id

    def result(task_id: str) -> dict[str, Any] | None:
        with app.read() as session:
            return agent_tasks.get(session, task_id=task_id).result

    task_id = await run_in_threadpool(queue)
    waiter = app.signals.subscribe(task_id)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            waiter.clear()
            done = await run_in_threadpool(result, task_id)
            if done is not None:
                if "error" in done:
                    raise ApiProblem(424, "agent_error", str(done["error"]))
                return done
            left = deadline - time.monotonic()
            if left <= 0 or app.signals.closing:
                raise ApiProblem(408, "wait_timeout", "the instance's host did not answer in time")
            await app.signals.wait(waiter, left)
    finally:
        app.signals.unsubscribe(task_id, waiter)


@router.post("/{ref}/exec", response_model=ExecOut)
async def exec_(ref: Ref, body: ExecIn, request: Request,
                principal: Principal = Depends(require("instances:write"))) -> dict[str, Any]:
    """Run a command inside a ready instance: stdout, stderr and the exit code."""
    result = await run_task(state(request), principal, ref, "exec", {"cmd": body.argv(), "timeout": body.timeout},
                            need_running=True, wait_s=body.timeout + AGENT_SLACK_S)
    return {"exit_code": result["exit_code"], "stdout": result["stdout"], "stderr": result["stderr"]}


@router.get("/{ref}/logs", response_model=None, responses={
    200: {"description": "The lines as text, or a server-sent event stream with `follow`",
          "content": {"text/plain": {"schema": {"type": "string"}},
                      "text/event-stream": {"schema": {"type": "string"}}}}})
async def logs(ref: Ref, request: Request, principal: Principal = Depends(require("instances:read")),
               tail: int = Query(default=100, ge=0, le=10_000),
               follow: bool = False) -> PlainTextResponse | StreamingResponse:
    """The instance's output: the last `tail` lines, or with `follow` a server-sent event stream."""
    app = state(request)
    first = await run_task(app, principal, ref, "logs", {"tail": tail}, need_running=False, wait_s=AGENT_SLACK_S)
    if not follow:
        return PlainTextResponse("".join(f"{line}\n" for line in first["lines"]))

    def status() -> Status:
        with app.read() as session:
            return Status(instances.get(session, project_id=scoped_project(principal), ref=ref).status)

    async def stream() -> AsyncIterator[str]:
        chunk = first
        while True:
            for line in chunk["lines"]:
                yield f"data: {json.dumps(line)}\n\n"
            if await request.is_disconnected() or app.signals.closing:
                return
            if await run_in_threadpool(status) in FINAL | {Status.FAILED, Status.STOPPED}:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(FOLLOW_POLL_S)
            chunk = await run_task(app, principal, ref, "logs", {"cursor": chunk["cursor"]}, need_running=False,
                                   wait_s=AGENT_SLACK_S)

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/{ref}/metrics", response_model=MetricsOut)
def metrics_series(ref: Ref, request: Request, principal: Principal = Depends(require("instances:read")),
                   since: datetime | None = None) -> dict[str, Any]:
    """Samples since `since` (ISO 8601), oldest first: GPU and CPU utilisation, memory, disk, network."""
    with state(request).read() as session:
        inst = instances.get(session, project_id=scoped_project(principal), ref=ref)
        rows = metrics.series(session, instance_id=inst.id, since=since)
        return {"data": [{"at": isoformat(r.at), **r.values} for r in rows]}
