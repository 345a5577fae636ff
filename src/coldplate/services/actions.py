"""Lifecycle verbs: user actions and agent reports. All go through `transition`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain.lifecycle import (
    DESIRED_CHANGED,
    TERMINATE_STEPS,
    Desired,
    HostStatus,
    Status,
    TerminateStep,
    action_allowed,
    report_rule,
)
from coldplate.services import capacity, outbox, signals
from coldplate.services.errors import InvalidState, NoCapacity
from coldplate.services.instances import InstanceRequest, demand_on
from coldplate.services.transitions import transition

DEFAULT_GRACE_SECONDS = 60
S = Status


def _require(action: str, inst: Instance) -> Status:
    current = Status(inst.status)
    if not action_allowed(action, current):
        raise InvalidState(f"cannot {action} an instance that is {current}", param="status")
    return current


def _drain(session: Session, *, clock: Clock, inst: Instance, desired: Desired, reason: str,
           force: bool, grace_seconds: int | None) -> None:
    inst.desired = desired.value
    inst.force = force
    inst.grace_seconds = 0 if force else (grace_seconds if grace_seconds is not None else DEFAULT_GRACE_SECONDS)
    transition(session, clock=clock, inst=inst, target=S.DRAINING, reason=reason)


def stop(session: Session, *, clock: Clock, inst: Instance, force: bool = False,
         grace_seconds: int | None = None, reason: str = "user") -> Instance:
    _require("stop", inst)
    _drain(session, clock=clock, inst=inst, desired=Desired.STOPPED, reason=reason, force=force,
           grace_seconds=grace_seconds)
    return inst


def terminate(session: Session, *, clock: Clock, inst: Instance, force: bool = False,
              grace_seconds: int | None = None, reason: str = "user") -> Instance:
    current = _require("terminate", inst)
    step = TERMINATE_STEPS[current]
    if step is TerminateStep.NOW:
        inst.desired = Desired.TERMINATED.value
        transition(session, clock=clock, inst=inst, target=S.TERMINATED, reason=reason)
    elif step is TerminateStep.REDIRECT:  # already stopping: make it a terminate, keep draining
        inst.desired = Desired.TERMINATED.value
        inst.restart_pending = False
        inst.status_reason = reason
        if force:
            inst.force, inst.grace_seconds = True, 0
        outbox.record(session, clock=clock, project_id=inst.project_id, instance_id=inst.id, type=DESIRED_CHANGED,
                      reason=reason, data={"status": current.value, "desired": Desired.TERMINATED.value})
        if inst.hostnode_id:
            capacity.bump_assignments(session, inst.hostnode_id)
        signals.touch(session, inst.id)
        session.flush()
    else:
        _drain(session, clock=clock, inst=inst, desired=Desired.TERMINATED, reason=reason, force=force,
               grace_seconds=grace_seconds)
    return inst


def start(session: Session, *, clock: Clock, inst: Instance, reason: str = "user") -> Instance:
    _require("start", inst)
    _reprovision(session, clock=clock, inst=inst, reason=reason)
    return inst


def restart(session: Session, *, clock: Clock, inst: Instance, force: bool = False,
            grace_seconds: int | None = None) -> Instance:
    _require("restart", inst)
    inst.restart_pending = True
    _drain(session, clock=clock, inst=inst, desired=Desired.RUNNING, reason="restart", force=force,
           grace_seconds=grace_seconds)
    return inst


def _reprovision(session: Session, *, clock: Clock, inst: Instance, reason: str) -> None:
    """stopped → provisioning on the same host: take its GPUs, vCPUs and memory back."""
    assert inst.hostnode_id is not None
    host_id = inst.hostnode_id
    taken: list[int] = []

    def change(host: Hostnode) -> dict[str, object]:
        if host.status != HostStatus.ONLINE:
            raise NoCapacity(f"hostnode {host.id} is {host.status}", param="id")
        free = [i for i in range(host.gpu_count) if i not in host.gpus_used]
        if len(free) < inst.gpu_count or host.vcpus - host.vcpus_used < inst.vcpus \
                or host.memory_gb - host.memory_gb_used < inst.memory_gb:
            raise NoCapacity(f"hostnode {host.id} has no room to start {inst.name} again; "
                             f"{len(free)} GPUs free, {inst.gpu_count} needed", param="id")
        taken[:] = free[: inst.gpu_count]
        return {"gpus_used": sorted([*host.gpus_used, *taken]), "vcpus_used": host.vcpus_used + inst.vcpus,
                "memory_gb_used": host.memory_gb_used + inst.memory_gb}

    capacity.mutate(session, host_id, change)
    inst.gpu_indices = list(taken)
    inst.desired = Desired.RUNNING.value
    inst.restart_pending = False
    inst.force = False
    transition(session, clock=clock, inst=inst, target=S.PROVISIONING, reason=reason)


def report(session: Session, *, clock: Clock, host: Hostnode, inst: Instance, status: Status,
           failure_reason: str | None = None, exit_code: int | None = None,
           exit_message: str | None = None) -> Instance:
    """An agent observed `status`. Repeats of the current status are no-ops (agents retry)."""
    if inst.hostnode_id != host.id:
        raise InvalidState(f"instance {inst.id} is not on hostnode {host.id}", param="instance_id")
    rule = report_rule(Status(inst.status), Desired(inst.desired), inst.restart_pending, status)
    if rule is None:
        return inst
    if exit_code is not None:
        inst.exit_code, inst.exit_message = exit_code, exit_message
    if status is S.READY:
        inst.ip = host.address
    if rule.set_desired is not None:
        inst.desired = rule.set_desired.value
    failure = (failure_reason or "the agent reported a failure") if status is S.FAILED else None
    if rule.via is not None:
        transition(session, clock=clock, inst=inst, target=rule.via)
    transition(session, clock=clock, inst=inst, target=rule.then, reason=rule.reason, failure_reason=failure)
    if rule.reprovision:
        try:
            _reprovision(session, clock=clock, inst=inst, reason="restart")
        except NoCapacity:
            inst.restart_pending = False
    return inst


__all__ = ["InstanceRequest", "demand_on", "stop", "start", "restart", "terminate", "report"]
