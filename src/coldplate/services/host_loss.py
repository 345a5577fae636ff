"""Host loss: hostnodes silent past their heartbeat timeout go offline; instances on a hostnode
offline for longer than the grace period fail with `host_lost`.

Both steps are per entity and re-check under a lock what the finder saw: a heartbeat may have
brought the host back, a user may have terminated the instance. Hostnodes are locked with
`FOR UPDATE` (a second replica waits, then sees `offline` and does nothing); lost instances are
claimed with a lease, as expiry's are, so two replicas never both fail one."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, DateTime, func, literal, literal_column, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock, as_utc
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain.lifecycle import HOLDS_DISK, WATCHED_HOST_STATUSES, HostStatus, Status
from coldplate.services import hostnodes, instances, leases, outbox
from coldplate.services.capacity import bump_assignments
from coldplate.services.projects import ADMIN_PROJECT_ID
from coldplate.services.transitions import transition

HELD = [s.value for s in HOLDS_DISK]
WATCHED = [s.value for s in WATCHED_HOST_STATUSES]
LOST_REASON = "the host stopped answering and did not come back in time"


def _silent(host: Hostnode, now: datetime) -> bool:
    last = as_utc(host.last_heartbeat_at) if host.last_heartbeat_at else as_utc(host.created_at)
    return host.status in WATCHED and now - last > timedelta(seconds=host.heartbeat_timeout_s)


def _silent_since(session: Session, now: datetime) -> ColumnElement[bool]:
    """SQL: the host's last sign of life is older than its own heartbeat timeout."""
    last = func.coalesce(Hostnode.last_heartbeat_at, Hostnode.created_at)
    if session.get_bind().dialect.name == "postgresql":
        return last + Hostnode.heartbeat_timeout_s * literal_column("interval '1 second'") < now
    # SQLite keeps datetimes as ISO text; julianday() counts days
    age_s = (func.julianday(literal(now, DateTime())) - func.julianday(last)) * 86400.0
    return age_s > Hostnode.heartbeat_timeout_s


def silent_host_ids(session: Session, *, clock: Clock) -> list[str]:
    """Hostnodes (online, draining or in maintenance) whose last heartbeat is older than their timeout:
    one query a pass that returns only those (at 10,000 hosts a pass must not load every host)."""
    query = select(Hostnode.id).where(Hostnode.status.in_(WATCHED), _silent_since(session, clock.now()))
    return list(session.scalars(query.order_by(Hostnode.id)))


def mark_offline(session: Session, *, clock: Clock, host_id: str) -> bool:
    """Take one silent hostnode offline, if it is still silent once locked."""
    host = session.scalars(select(Hostnode).where(Hostnode.id == host_id).with_for_update()
                           .execution_options(populate_existing=True)).first()
    now = clock.now()
    if host is None or not _silent(host, now):
        return False
    hostnodes.set_status(host, HostStatus.OFFLINE, by_agent=True)
    host.offline_since = now
    outbox.record(session, clock=clock, project_id=ADMIN_PROJECT_ID, type="hostnode.offline",
                  data={"hostnode_id": host.id})
    bump_assignments(session, host.id)
    session.flush()
    return True


def _lost_hosts(cutoff: datetime) -> ColumnElement[bool]:
    return Instance.hostnode_id.in_(select(Hostnode.id).where(Hostnode.status == HostStatus.OFFLINE.value,
                                                              Hostnode.offline_since <= cutoff))


def claim_lost(session: Session, *, clock: Clock, owner: str, grace_seconds: float, ttl: timedelta,
               limit: int) -> list[str]:
    """Lease up to `limit` instances that still hold resources on hostnodes lost for over the grace."""
    now = clock.now()
    cutoff = now - timedelta(seconds=grace_seconds)
    return leases.claim(session, model=Instance, where=[Instance.status.in_(HELD), _lost_hosts(cutoff)],
                        owner=owner, now=now, ttl=ttl, limit=limit)


def fail_lost(session: Session, *, clock: Clock, instance_id: str, owner: str, grace_seconds: float) -> bool:
    """Fail one claimed instance with `host_lost` if `owner` still holds it and its host is still lost."""
    if not leases.finish(session, model=Instance, row_id=instance_id, owner=owner):
        return False
    inst = instances.lock(session, instance_id)
    if inst is None or inst.status not in HELD or inst.hostnode_id is None:
        return False
    # locked (instance first, then hostnode: the global order) so a heartbeat cannot slip in between
    host = session.scalars(select(Hostnode).where(Hostnode.id == inst.hostnode_id).with_for_update()
                           .execution_options(populate_existing=True)).first()
    cutoff = clock.now() - timedelta(seconds=grace_seconds)
    if host is None or host.status != HostStatus.OFFLINE.value or host.offline_since is None \
            or as_utc(host.offline_since) > cutoff:
        return False
    transition(session, clock=clock, inst=inst, target=Status.FAILED, reason="host_lost", failure_reason=LOST_REASON)
    return True
