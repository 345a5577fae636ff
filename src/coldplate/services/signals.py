"""Keys (hostnode and instance ids) a transaction changed, for waking long-polls after commit."""

from __future__ import annotations

from sqlalchemy.orm import Session


def touch(session: Session, key: str) -> None:
    keys: set[str] = session.info.setdefault("touched", set())
    keys.add(key)


def take(session: Session) -> set[str]:
    keys: set[str] = session.info.pop("touched", set())
    return keys
