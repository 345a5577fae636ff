"""Idempotency keys: a retry with the same key and body gets the first response back."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import IdempotencyRecord
from coldplate.services.errors import IdempotencyConflict


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def replay(session: Session, *, project_id: str, key: str, digest: str) -> IdempotencyRecord | None:
    record = session.get(IdempotencyRecord, (project_id, key))
    if record is not None and record.request_hash != digest:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request body",
                                  param="Idempotency-Key")
    return record


def remember(session: Session, *, clock: Clock, project_id: str, key: str, digest: str, status_code: int,
             body: dict[str, Any]) -> None:
    session.add(IdempotencyRecord(project_id=project_id, key=key, request_hash=digest, status_code=status_code,
                                  body=body, created_at=clock.now()))
    session.flush()
