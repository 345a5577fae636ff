"""Terminates instances whose reservation (`duration_hours`) or `max_hours` has run out."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from coldplate.loops.each import each_claimed
from coldplate.services import expiry
from coldplate.services.leases import new_owner
from coldplate.state import AppState


def run_once(app: AppState, owner: str | None = None) -> int:
    """Claim due instances, expire each in its own transaction; returns how many this pass expired."""
    me = owner or new_owner("timers")
    ttl = timedelta(seconds=app.settings.lease_ttl_s)

    def claim(session: Session, limit: int) -> list[str]:
        return expiry.claim_due(session, clock=app.clock, owner=me, ttl=ttl, limit=limit)

    def act(session: Session, instance_id: str) -> bool:
        return expiry.expire(session, clock=app.clock, instance_id=instance_id, owner=me)

    return each_claimed(app, claim, act, message="expiring an instance failed", key="instance_id")
