"""Leases: how a loop on one replica claims rows so that a loop on another leaves them alone.

A row that can be leased carries `lease_owner` and `lease_expires_at`. The schedule:

1. `claim` (one short transaction) picks rows that match the caller's condition and that nobody
   holds (no owner, or an expired lease), `FOR UPDATE SKIP LOCKED` on PostgreSQL so two replicas
   claiming at once take disjoint rows instead of waiting for each other (SQLite has one writer,
   so there the claim is serialised anyway), stamps them with the owner and `now + ttl`, and
   returns their ids.
2. The caller works on each row with no transaction open (a call to a webhook receiver, a disk
   copy) or, for work that is only database writes, goes straight to step 3.
3. `finish` (in the transaction that writes the result) clears the lease with an update guarded
   by `lease_owner = owner`, and says whether the caller still held it. If it did not (its lease
   ran out and another owner claimed the row), the caller must write nothing.

A lease that is never finished (the replica died, or the work raised) simply runs out: after
`ttl` any owner's next `claim` takes the row again. That is also the retry back-off of a row
whose work keeps failing. Owners are unique per loop runner (`new_owner`), so a runner never
mistakes another's lease, even in the same process.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session


class Leasable(Protocol):
    """A mapped class with a string id and the two lease columns (see `db/tables.py`)."""

    id: ClassVar[InstrumentedAttribute[str]]
    lease_owner: ClassVar[InstrumentedAttribute[str | None]]
    lease_expires_at: ClassVar[InstrumentedAttribute[datetime | None]]


def new_owner(name: str) -> str:
    """A unique owner id for one loop runner: host, process, loop name and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{name}:{secrets.token_hex(4)}"


def free(model: type[Leasable], now: datetime) -> ColumnElement[bool]:
    """Rows nobody holds: never claimed, finished, or claimed by an owner whose time ran out."""
    return or_(model.lease_owner.is_(None), model.lease_expires_at <= now)


def claim(session: Session, *, model: type[Leasable], where: Sequence[ColumnElement[bool]], owner: str,
          now: datetime, ttl: timedelta, limit: int) -> list[str]:
    """Lease up to `limit` free rows matching `where` to `owner` until `now + ttl`; returns their ids."""
    ids = list(session.scalars(
        select(model.id).where(*where, free(model, now)).order_by(model.id).limit(limit)
        .with_for_update(skip_locked=True)
    ))
    if ids:
        session.execute(update(model).where(model.id.in_(ids))
                        .values(lease_owner=owner, lease_expires_at=now + ttl)
                        .execution_options(synchronize_session=False))
    return ids


def finish(session: Session, *, model: type[Leasable], row_id: str, owner: str,
           values: dict[str, Any] | None = None) -> bool:
    """End `owner`'s lease on the row (and write `values`), only if `owner` still holds it.

    Call it first in the transaction that writes the work's result: on PostgreSQL the update also
    locks the row, so the re-read that follows sees the latest committed state."""
    statement = (update(model).where(model.id == row_id, model.lease_owner == owner)
                 .values(lease_owner=None, lease_expires_at=None, **(values or {}))
                 .execution_options(synchronize_session=False))
    result = session.connection().execute(statement)
    return bool(result.rowcount == 1)
