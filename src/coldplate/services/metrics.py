"""Per-instance metric samples pushed by agents with their heartbeats."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Instance, MetricSample

MAX_POINTS = 10_000


def record(session: Session, *, clock: Clock, host_id: str, samples: list[tuple[str, dict[str, float]]]) -> int:
    """Store samples for instances on the host; samples for other instances are dropped."""
    if not samples:
        return 0
    ids = {instance_id for instance_id, _ in samples}
    mine = set(session.scalars(select(Instance.id).where(Instance.id.in_(ids), Instance.hostnode_id == host_id)))
    now = clock.now()
    kept = [{"instance_id": i, "at": now, "values": v} for i, v in samples if i in mine]
    if kept:  # one multi-row INSERT for the whole heartbeat, not one per sample
        session.execute(insert(MetricSample).values(kept))
    return len(kept)


def series(session: Session, *, instance_id: str, since: datetime | None) -> list[MetricSample]:
    query = select(MetricSample).where(MetricSample.instance_id == instance_id)
    if since is not None:
        query = query.where(MetricSample.at > since)
    return list(session.scalars(query.order_by(MetricSample.at, MetricSample.id).limit(MAX_POINTS)))


def purge(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` samples taken before `before`."""
    ids = list(session.scalars(select(MetricSample.id).where(MetricSample.at < before)
                               .order_by(MetricSample.id).limit(limit)))
    if not ids:
        return 0
    deleted = session.connection().execute(delete(MetricSample).where(MetricSample.id.in_(ids)))
    return int(deleted.rowcount)  # another replica may have deleted some of them first
