"""What a running control plane holds: the session factory, the clock, settings and wake-ups.

Shared by the API and the loops, so neither imports the other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from coldplate.clock import Clock
from coldplate.db.engine import READ_ONLY
from coldplate.services import signals
from coldplate.wakeups import Signals


@dataclass
class Settings:
    heartbeat_timeout_s: int = 30
    host_lost_grace_s: float = 120.0
    loop_interval_s: float = 1.0
    metrics_retention_s: float = 24 * 3600
    run_loops: bool = True
    max_body_bytes: int = 2 * 1024 * 1024  # larger request bodies are refused (413)


@dataclass
class AppState:
    sessions: sessionmaker[Session]
    clock: Clock
    settings: Settings = field(default_factory=Settings)
    signals: Signals = field(default_factory=Signals)

    def __post_init__(self) -> None:
        @event.listens_for(self.sessions, "after_commit")
        def _after_commit(session: Session) -> None:
            self.signals.notify(signals.take(session))

        @event.listens_for(self.sessions, "after_rollback")
        def _after_rollback(session: Session) -> None:
            signals.take(session)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it does not take the write lock."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session
