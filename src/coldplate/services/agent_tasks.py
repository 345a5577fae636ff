"""Requests a user makes of a running instance (exec, logs), carried to its agent and back.

The control plane never calls a host: a task row is written, the host's long-poll is woken, the
agent runs it and posts the result, and the waiting request is woken by that commit."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import AgentTask, Hostnode, Instance
from coldplate.domain.lifecycle import Status
from coldplate.ids import new_id
from coldplate.services import capacity, signals
from coldplate.services.errors import InvalidState, NotFound

KINDS = ("exec", "logs")


def create(session: Session, *, clock: Clock, inst: Instance, kind: str, params: dict[str, Any],
           need_running: bool) -> AgentTask:
    if inst.hostnode_id is None:
        raise InvalidState(f"instance {inst.id} is not on a hostnode", param="id")
    if need_running and inst.status != Status.READY.value:
        raise InvalidState(f"instance {inst.id} is {inst.status}; it must be ready", param="id")
    task = AgentTask(id=new_id("task"), hostnode_id=inst.hostnode_id, instance_id=inst.id, kind=kind,
                     params=params, status="pending", result=None, created_at=clock.now())
    session.add(task)
    capacity.bump_assignments(session, inst.hostnode_id)
    session.flush()
    return task


def pending(session: Session, *, host_ids: Collection[str]) -> dict[str, list[AgentTask]]:
    """Each host's tasks not done yet (oldest first), for many hosts in one query."""
    found: dict[str, list[AgentTask]] = {host_id: [] for host_id in host_ids}
    for task in session.scalars(select(AgentTask).where(AgentTask.hostnode_id.in_(host_ids),
                                                        AgentTask.status == "pending")
                                .order_by(AgentTask.created_at, AgentTask.id)):
        found[task.hostnode_id].append(task)
    return found


def complete(session: Session, *, clock: Clock, host: Hostnode, task_id: str, result: dict[str, Any]) -> None:
    task = session.get(AgentTask, task_id)
    if task is None or task.hostnode_id != host.id:
        raise NotFound(f"task {task_id} is not for this hostnode", param="task_id")
    if task.status == "done":
        return  # an agent retrying its post
    task.status, task.result, task.done_at = "done", result, clock.now()
    signals.touch(session, task.id)
    signals.touch(session, host.id)  # the host's remembered assignments list the task as pending
    session.flush()


def get(session: Session, *, task_id: str) -> AgentTask:
    task = session.get(AgentTask, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found", param="task_id")
    return task


def purge(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` tasks answered, or asked, before `before` (nobody waits that long)."""
    old = or_(AgentTask.done_at < before, AgentTask.created_at < before)
    ids = list(session.scalars(select(AgentTask.id).where(old).order_by(AgentTask.id).limit(limit)))
    if not ids:
        return 0
    deleted = session.connection().execute(delete(AgentTask).where(AgentTask.id.in_(ids)))
    return int(deleted.rowcount)  # another replica may have deleted some of them first
