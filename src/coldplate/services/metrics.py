"""Per-instance metric samples pushed by agents with their heartbeats."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Instance, MetricSample

MAX_POINTS = 10_000
CHUNK = 1000  # rows per INSERT (3 parameters each), ids per IN list
T = TypeVar("T")


def record(session: Session, *, clock: Clock, samples: Sequence[tuple[str, str, dict[str, float]]]) -> int:
    """Store samples, each (host id, instance id, values): a heartbeat's, or a whole group of
    heartbeats', in multi-row INSERTs of CHUNK rows. A sample for an instance that is not on its host
    is dropped."""
    if not samples:
        return 0
    ids = list({instance_id for _, instance_id, _ in samples})
    on = {row.id: row.hostnode_id for part in _chunks(ids)
          for row in session.execute(select(Instance.id, Instance.hostnode_id).where(Instance.id.in_(part)))}
    now = clock.now()
    kept = [{"instance_id": i, "at": now, "values": v} for host_id, i, v in samples if on.get(i) == host_id]
    for rows in _chunks(kept):
        session.execute(insert(MetricSample).values(rows))
    return len(kept)


def _chunks(items: list[T]) -> Iterator[list[T]]:
    """`items` in lists of CHUNK: a group of heartbeats carries up to 500,000 samples, and one
    statement holds at most 32,766 parameters on SQLite, 65,535 on PostgreSQL."""
    for first in range(0, len(items), CHUNK):
        yield items[first:first + CHUNK]


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
