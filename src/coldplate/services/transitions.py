"""Every instance state change: the lifecycle table, resource release, timestamps, outbox event."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain import placement
from coldplate.domain.lifecycle import (
    FAILURE_ENDS,
    HOLDS_DISK,
    HOLDS_GPUS,
    Desired,
    InvalidTransition,
    Status,
    check_transition,
)
from coldplate.services import billing, capacity, outbox, signals
from coldplate.services.errors import InvalidState


def transition(session: Session, *, clock: Clock, inst: Instance, target: Status, reason: str | None = None,
               failure_reason: str | None = None) -> None:
    current = Status(inst.status)
    if target is Status.FAILED and FAILURE_ENDS[Desired(inst.desired)] is not Status.FAILED:
        target, reason = FAILURE_ENDS[Desired(inst.desired)], None  # keeps the reason of the terminate
    try:
        check_transition(current, target)
    except InvalidTransition as exc:
        raise InvalidState(f"instance {inst.id} is {current}; it cannot become {target}",
                           param="status") from exc
    billing.on_transition(session, clock=clock, inst=inst, current=current, target=target)
    now = clock.now()
    if inst.hostnode_id is not None:
        _release(session, inst, current, target)
    inst.status = target.value
    inst.updated_at = now
    if reason is not None:
        inst.status_reason = reason
    if failure_reason is not None:
        inst.failure_reason = failure_reason
    if target is Status.READY:
        inst.ready_at = now
    elif target is Status.STOPPED:
        inst.stopped_at = now
    elif target is Status.TERMINATED:
        inst.terminated_at = now
    outbox.record(session, clock=clock, project_id=inst.project_id, instance_id=inst.id,
                  type="instance.lifecycle", from_status=current.value, to_status=target.value,
                  reason=inst.status_reason, data={"failure_reason": inst.failure_reason} if failure_reason else {})
    if inst.hostnode_id is not None:
        capacity.bump_assignments(session, inst.hostnode_id)
    signals.touch(session, inst.id)
    session.flush()


def _release(session: Session, inst: Instance, current: Status, target: Status) -> None:
    compute = current in HOLDS_GPUS and target not in HOLDS_GPUS
    storage = current in HOLDS_DISK and target not in HOLDS_DISK
    if not (compute or storage):
        return
    host_ports = [p["external_port"] for p in inst.ports] + ([inst.ssh_port] if inst.ssh_port else [])

    def change(host: Hostnode) -> dict[str, object]:
        values: dict[str, object] = {}
        if compute:
            values["gpus_used"] = placement.release(host.gpus_used, inst.gpu_indices)
            values["vcpus_used"] = max(0, host.vcpus_used - inst.vcpus)
            values["memory_gb_used"] = max(0, host.memory_gb_used - inst.memory_gb)
        if storage:
            values["disk_gb_used"] = max(0, host.disk_gb_used - inst.disk_gb)
            values["ports_used"] = placement.release(host.ports_used, host_ports)
        return values

    assert inst.hostnode_id is not None
    capacity.mutate(session, inst.hostnode_id, change)
