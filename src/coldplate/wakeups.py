"""Wake-ups after commit: per-key asyncio events set when a committed transaction touched the key
(a hostnode or an instance id). Long-polls (agent assignments, instance waits) wait on them."""

from __future__ import annotations

import asyncio
import threading


class Signals:
    """Per-key asyncio events set after a commit touched the key (a hostnode or an instance id).

    Commits happen in worker threads; waiters live on the event loop."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

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

    def close(self) -> None:
        """The server is shutting down: wake every waiter so long-polls answer now."""
        self.closing = True
        with self._lock:
            keys = set(self._waiters)
        self.notify(keys)

    async def wait(self, waiter: asyncio.Event, timeout: float) -> None:
        """Wait for a wake-up, at most `timeout` and at most one second: other replicas' commits do
        not reach this process, so callers re-read the database each second anyway."""
        if self.closing:
            return
        try:
            await asyncio.wait_for(waiter.wait(), timeout=min(timeout, 1.0))
        except TimeoutError:
            pass

    def notify(self, keys: set[str]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            hit = [w for k in keys for w in self._waiters.get(k, ())]
        for waiter in hit:
            loop.call_soon_threadsafe(waiter.set)
