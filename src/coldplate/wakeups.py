"""Wake-ups after commit: per-key asyncio events set when a committed transaction touched the key
(a hostnode, instance or task id). Long-polls (agent assignments, instance waits) wait on them.

A waiting long-poll costs nothing: it sleeps until its key is notified (a commit in this process,
or, on PostgreSQL, a NOTIFY from another replica relayed by `coldplate.pg_wakeups`) or its
deadline. Each host's last answer (its assignments as of a version) is remembered here, so an agent
asking again with the version it already has waits without reading the database, and a deadline
passing answers without reading it either; a notification for the host forgets the answer, so the
next ask reads it afresh."""

from __future__ import annotations

import asyncio
import threading


class Signals:
    """Per-key asyncio events set after a commit touched the key.

    Commits happen in worker threads; waiters live on the event loop."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self._known: dict[str, object] = {}  # key → the last read of it, while no commit touched it
        self._stamp = 0  # counts notifications; a read is remembered only if its key was not touched since
        self._touched_at: dict[str, int] = {}  # key with waiters → stamp of its last notification

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, key: str) -> asyncio.Event:
        waiter = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        return waiter

    def unsubscribe(self, key: str, waiter: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]
                    self._touched_at.pop(key, None)

    def waiting(self) -> int:
        """How many keys have a waiter (for tests and benchmarks)."""
        with self._lock:
            return len(self._waiters)

    def close(self) -> None:
        """The server is shutting down: wake every waiter so long-polls answer now, from what they
        remember where they can (10,000 reads at once would outlast the graceful shutdown)."""
        self.closing = True
        with self._lock:
            hit = [w for waiters in self._waiters.values() for w in waiters]
        self._wake(hit)

    def reset(self) -> None:
        """Notifications may have been missed (a listener reconnected): forget every remembered
        read and wake every waiter, so each reads its state afresh once."""
        with self._lock:
            keys = set(self._waiters)
            self._known.clear()
        self.notify(keys)

    async def wait(self, waiter: asyncio.Event, timeout: float) -> None:
        """Wait for a wake-up, at most `timeout` seconds."""
        if self.closing:
            return
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel that meets a wake-up
            async with asyncio.timeout(max(timeout, 0.0)):
                await waiter.wait()
        except TimeoutError:
            pass

    def stamp(self) -> int:
        """Take before a read whose result goes to `remember`."""
        with self._lock:
            return self._stamp

    def known(self, key: str) -> object | None:
        """The last read remembered for `key`, if no commit has touched the key since."""
        with self._lock:
            return self._known.get(key)

    def remember(self, key: str, read: object, stamp: int) -> None:
        """Keep what a read of `key` returned, unless the key was notified after `stamp` was taken
        (the read may predate that commit). Call only while subscribed to the key."""
        with self._lock:
            if self._touched_at.get(key, -1) <= stamp:
                self._known[key] = read

    def notify(self, keys: set[str]) -> None:
        with self._lock:
            self._stamp += 1
            for key in keys:
                self._known.pop(key, None)
                if key in self._waiters:
                    self._touched_at[key] = self._stamp
            hit = [w for k in keys for w in self._waiters.get(k, ())]
        self._wake(hit)

    def _wake(self, hit: list[asyncio.Event]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for waiter in hit:
            loop.call_soon_threadsafe(waiter.set)
