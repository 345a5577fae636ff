"""Hostnodes silent past their heartbeat timeout go offline; their instances fail after a grace."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from coldplate.loops.each import each, each_claimed
from coldplate.services import host_loss
from coldplate.services.leases import new_owner
from coldplate.state import AppState


def run_once(app: AppState, owner: str | None = None) -> tuple[int, int]:
    """Returns (hostnodes taken offline, instances failed with `host_lost`) by this pass."""
    me = owner or new_owner("hosts")
    clock, grace = app.clock, app.settings.host_lost_grace_s
    ttl = timedelta(seconds=app.settings.lease_ttl_s)

    def offline(session: Session, host_id: str) -> bool:
        return host_loss.mark_offline(session, clock=clock, host_id=host_id)

    def claim(session: Session, limit: int) -> list[str]:
        return host_loss.claim_lost(session, clock=clock, owner=me, grace_seconds=grace, ttl=ttl, limit=limit)

    def lost(session: Session, instance_id: str) -> bool:
        return host_loss.fail_lost(session, clock=clock, instance_id=instance_id, owner=me, grace_seconds=grace)

    with app.read() as session:
        silent = host_loss.silent_host_ids(session, clock=clock)
    went_offline = each(app, silent, offline, message="taking a hostnode offline failed", key="hostnode_id")
    failed = each_claimed(app, claim, lost, message="failing an instance of a lost host failed", key="instance_id")
    return went_offline, failed
