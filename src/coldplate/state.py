"""What a running control plane holds: the session factory, the clock, settings and wake-ups.

Shared by the API and the loops, so neither imports the other."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from coldplate.clock import Clock
from coldplate.db.engine import READ_ONLY
from coldplate.pg_wakeups import PgListener, libpq_url, notify_keys
from coldplate.services import signals
from coldplate.services.errors import Conflict
from coldplate.wakeups import Signals

T = TypeVar("T")
TRANSACT_ATTEMPTS = 12
# PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def retriable(exc: BaseException) -> bool:
    """A failure another attempt in a fresh transaction can get past: a lost compare-and-set, a
    deadlock or serialization failure, a lock that was not available (SQLite: the database was busy)."""
    if isinstance(exc, Conflict | StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES or "database is locked" in str(exc.orig)
    return False

HOST_TIMEOUT_BEATS = 3


@dataclass
class Settings:
    host_lost_grace_s: float = 120.0
    loop_interval_s: float = 1.0
    lease_ttl_s: float = 60.0  # how long a loop's claim on a row lasts before another may take it
    metrics_retention_s: float = 24 * 3600
    run_loops: bool = True
    allow_private_webhooks: bool = False  # `coldplate server --allow-private-webhooks`; `coldplate up` sets it
    webhook_lease_s: float = 30.0  # a dispatcher that dies mid-send leaves its deliveries this long
    max_body_bytes: int = 2 * 1024 * 1024  # larger request bodies are refused (413)

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
        # SQLite has one writer at a time. Writers of this process queue on a mutex for it: waiting in
        # SQLite's busy handler instead means sleeping in steps of up to 100 ms while the lock is
        # free, in no order, which under a fleet's heartbeats stretched a create to seconds.
        dialect = self.sessions.kw["bind"].dialect.name
        self._writer: AbstractContextManager[object] = threading.RLock() if dialect == "sqlite" else nullcontext()
        if dialect == "postgresql":
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
        with self._writer, self.sessions() as session, session.begin():
            yield session

    def transact(self, fn: Callable[[Session], T], *, attempts: int = TRANSACT_ATTEMPTS) -> T:
        """Run `fn` in a transaction and commit; if it (or the commit) fails for a reason a retry can
        get past (see `retriable`), run it again in a fresh one after a short random pause, so that
        writers which collided do not collide again in step. Every writer of instances and hostnodes
        in the API goes through here: a deadlock is a retry, never a 500."""
        for attempt in range(attempts):
            try:
                with self.tx() as session:
                    return fn(session)
            except Exception as exc:
                if attempt == attempts - 1 or not retriable(exc):
                    raise
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))  # backoff, not business time
        raise AssertionError("unreachable")

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it does not take the write lock."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session
