"""Idempotency keys: a retry with the same key and body gets the first response back."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import IdempotencyRecord
from coldplate.services.errors import Conflict, IdempotencyConflict


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def replay(session: Session, *, project_id: str, key: str, digest: str) -> IdempotencyRecord | None:
    record = session.get(IdempotencyRecord, (project_id, key))
    if record is not None and record.request_hash != digest:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request body",
                                  param="Idempotency-Key")
    return record


def claim(session: Session, *, clock: Clock, project_id: str, key: str, digest: str) -> IdempotencyRecord:
    """Take the key before doing the work: a concurrent request with the same key waits on this row
    (PostgreSQL) or finds it taken, and is retried (`Conflict`) until it can replay our answer."""
    record = IdempotencyRecord(project_id=project_id, key=key, request_hash=digest, status_code=0, body={},
                               created_at=clock.now())
    session.add(record)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("a request with this Idempotency-Key is in flight; retry", param="Idempotency-Key") from exc
    return record


def remember(session: Session, *, record: IdempotencyRecord, status_code: int, body: dict[str, Any]) -> None:
    """The answer the claimed key replays; written in the transaction that did the work."""
    record.status_code, record.body = status_code, body
    session.flush()
