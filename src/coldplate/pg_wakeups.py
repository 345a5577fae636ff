"""Wake-ups across replicas on PostgreSQL: LISTEN/NOTIFY.

Each committing transaction that touched keys sends `pg_notify` inside itself (PostgreSQL delivers
it at commit, and never for a rollback). Each replica runs one listener thread on its own
connection, which relays other replicas' keys to its `Signals`. The listener proves its connection
alive by notifying itself every `ping_s` through the ordinary pool; a ping that does not come
back within `dead_after_s` (a stalled or half-open connection) or any error drops the connection
and opens a new one. Notifications sent while no connection listened are lost, so after every
(re)connection the listener calls `Signals.reset()`: every waiter reads its state once."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import psycopg
from sqlalchemy import Connection, Engine, text

from coldplate.wakeups import Signals

log = logging.getLogger(__name__)
CHANNEL = "coldplate_wakeups"
MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def notify_keys(conn: Connection, origin: str, keys: set[str]) -> None:
    """Send `keys` to the other replicas when the current transaction commits."""
    chunk: list[str] = []
    size = 0
    for key in sorted(keys):
        if chunk and size + len(key) + 1 > MAX_PAYLOAD:
            conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": f"{origin}|{','.join(chunk)}"})
            chunk, size = [], 0
        chunk.append(key)
        size += len(key) + 1
    if chunk:
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": f"{origin}|{','.join(chunk)}"})


def libpq_url(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    """One LISTEN connection per replica, in a thread of its own; reconnects forever."""

    def __init__(self, *, url: str, engine: Engine, signals: Signals, origin: str | None = None,
                 ping_s: float = 5.0, dead_after_s: float = 10.0, retry_s: float = 0.5) -> None:
        self.url = url
        self.engine = engine  # pings go through the ordinary pool, not the listening connection
        self.signals = signals
        self.origin = origin or uuid.uuid4().hex[:12]
        self.ping_s, self.dead_after_s, self.retry_s = ping_s, dead_after_s, retry_s
        self.connects = 0  # successful (re)connections, for tests and logs
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coldplate-pg-wakeups", daemon=True)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def start(self) -> PgListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # psycopg.Error, OSError, or our own dead-connection verdict
                if self._stop.is_set():
                    return
                log.warning("wake-up listener lost its connection (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()
            self._stop.wait(self.retry_s)

    def _listen(self) -> None:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.dead_after_s)),
                               application_name="coldplate-wakeups")
        self._conn = conn
        conn.execute(f"LISTEN {CHANNEL}")
        self.connects += 1
        self.connected.set()
        self.signals.reset()  # whatever was committed while nobody listened
        ping_token = ""
        ping_sent = pong_at = time.monotonic()
        while not self._stop.is_set():
            for note in conn.notifies(timeout=min(self.ping_s, 1.0), stop_after=1000):
                origin, _, keys = note.payload.partition("|")
                if origin == f"ping-{self.origin}":
                    if keys == ping_token:
                        pong_at = time.monotonic()
                elif origin != self.origin and keys:
                    self.signals.notify(set(keys.split(",")))
            now = time.monotonic()
            if ping_token and pong_at < ping_sent and now - ping_sent > self.dead_after_s:
                raise ConnectionError(f"no answer to our own NOTIFY for {now - ping_sent:.1f}s")
            if now - ping_sent >= self.ping_s and (not ping_token or pong_at >= ping_sent):
                ping_token = uuid.uuid4().hex[:8]
                ping_sent = now
                self._ping(ping_token)

    def _ping(self, token: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": f"ping-{self.origin}|{token}"})
        except Exception as exc:  # the database is away: the listener's own connection will say so
            log.warning("wake-up listener could not ping itself (%s)", exc)
