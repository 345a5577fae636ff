"""What a running control plane holds: the session factory, the clock, settings and wake-ups.

Shared by the API and the loops, so neither imports the other."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from coldplate.clock import Clock
from coldplate.db.engine import READ_ONLY
from coldplate.pg_wakeups import PgListener, libpq_url, notify_keys
from coldplate.services import signals
from coldplate.wakeups import Signals

HOST_TIMEOUT_BEATS = 3


@dataclass
class Settings:
    host_lost_grace_s: float = 120.0
    loop_interval_s: float = 1.0
    metrics_retention_s: float = 24 * 3600
    run_loops: bool = True
    # Agents heartbeat this often (sent in every registration and heartbeat answer). 60 s keeps a
    # 10,000-host fleet at about 170 heartbeats a second; a host silent for HOST_TIMEOUT_BEATS
    # intervals goes offline (docs/architecture.md, "Heartbeats at scale").
    heartbeat_interval_s: float = 60.0

    @property
    def host_timeout_s(self) -> int:
        """The heartbeat timeout a host registers with unless its agent asks for another."""
        return int(HOST_TIMEOUT_BEATS * self.heartbeat_interval_s)


@dataclass
class AppState:
    sessions: sessionmaker[Session]
    clock: Clock
    settings: Settings = field(default_factory=Settings)
    signals: Signals = field(default_factory=Signals)
    origin: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this replica, in NOTIFY payloads
    listener: PgListener | None = None  # relays other replicas' commits, while the app runs (PostgreSQL)

    def __post_init__(self) -> None:
        if self.sessions.kw["bind"].dialect.name == "postgresql":
            @event.listens_for(self.sessions, "before_commit")
            def _notify_replicas(session: Session) -> None:
                keys: set[str] = session.info.get("touched", set())
                if keys:
                    notify_keys(session.connection(), self.origin, keys)

        @event.listens_for(self.sessions, "after_commit")
        def _after_commit(session: Session) -> None:
            self.signals.notify(signals.take(session))

        @event.listens_for(self.sessions, "after_rollback")
        def _after_rollback(session: Session) -> None:
            signals.take(session)

    def listen(self) -> Callable[[], None]:
        """Start relaying other replicas' commits to `signals` (PostgreSQL); returns the stop."""
        engine = self.sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            return lambda: None  # SQLite: one process per database file, its own commits are all there are
        listener = self.listener = PgListener(url=libpq_url(engine), engine=engine, signals=self.signals,
                                              origin=self.origin)
        return listener.start().stop

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
