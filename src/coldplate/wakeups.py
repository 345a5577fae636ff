"""Wake-ups after commit: per-key asyncio events set when a committed transaction touched the key
(a hostnode, instance or task id). Long-polls (agent assignments, instance waits) wait on them.

A waiting long-poll costs nothing: it sleeps until its key is notified (a commit in this process,
or, on PostgreSQL, a NOTIFY from another replica relayed by `coldplate.pg_wakeups`) or its
deadline. Each host's last seen assignment version is remembered here, so an agent asking again
with the version it already has waits without reading the database; a notification for the host
forgets the version, so the next ask reads it afresh."""

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
        self._versions: dict[str, int] = {}  # key → last assignment version read, while no commit touched it
        self._stamp = 0  # counts notifications; a read records a version only if its key was not touched since
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
        """The server is shutting down: wake every waiter so long-polls answer now."""
        self.closing = True
        self.reset()

    def reset(self) -> None:
        """Notifications may have been missed (a listener reconnected): forget every remembered
        version and wake every waiter, so each reads its state afresh once."""
        with self._lock:
            keys = set(self._waiters)
            self._versions.clear()
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

    def known_version(self, key: str) -> int | None:
        with self._lock:
            return self._versions.get(key)

    def remember(self, key: str, version: int, stamp: int) -> None:
        """Record the version a read returned, unless the key was notified after `stamp` was taken
        (the read may predate that commit). Call only while subscribed to the key."""
        with self._lock:
            if self._touched_at.get(key, -1) <= stamp:
                self._versions[key] = version

    def notify(self, keys: set[str]) -> None:
        with self._lock:
            self._stamp += 1
            for key in keys:
                self._versions.pop(key, None)
                if key in self._waiters:
                    self._touched_at[key] = self._stamp
            hit = [w for k in keys for w in self._waiters.get(k, ())]
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for waiter in hit:
            loop.call_soon_threadsafe(waiter.set)
