"""Expiry: instances whose reservation (`duration_hours`) or `max_hours` has run out are terminated.

The loop claims due instances with a lease (so two replicas never both terminate one), then
`expire` handles each in its own transaction: it ends the lease, re-reads the row and re-checks
that it is still due, because a user or an agent may have changed it since the claim."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, not_
from sqlalchemy.orm import Session

from coldplate.clock import Clock, as_utc
from coldplate.db.tables import Instance
from coldplate.domain.lifecycle import Desired, Status
from coldplate.services import actions, instances, leases

S = Status
OVER = (S.TERMINATED.value, S.FAILED.value)


def _due(now: datetime) -> list[ColumnElement[bool]]:
    return [
        Instance.expires_at <= now,
        Instance.status.notin_(OVER),
        # already on its way out: nothing more to ask of it
        not_(and_(Instance.status == S.DRAINING.value, Instance.desired == Desired.TERMINATED.value)),
    ]


def is_due(inst: Instance, now: datetime) -> bool:
    if inst.expires_at is None or as_utc(inst.expires_at) > now or inst.status in OVER:
        return False
    return not (inst.status == S.DRAINING.value and inst.desired == Desired.TERMINATED.value)


def claim_due(session: Session, *, clock: Clock, owner: str, ttl: timedelta, limit: int) -> list[str]:
    """Lease up to `limit` due instances to `owner`; returns their ids."""
    now = clock.now()
    return leases.claim(session, model=Instance, where=_due(now), owner=owner, now=now, ttl=ttl, limit=limit)


def expire(session: Session, *, clock: Clock, instance_id: str, owner: str) -> bool:
    """Terminate one claimed instance with reason `expired` if `owner` still holds it and it is still due."""
    if not leases.finish(session, model=Instance, row_id=instance_id, owner=owner):
        return False
    inst = instances.lock(session, instance_id)  # instance before hostnode: the one lock order
    if inst is None or not is_due(inst, clock.now()):
        return False
    actions.terminate(session, clock=clock, inst=inst, reason="expired")
    return True
