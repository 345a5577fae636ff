"""Drives the loops: every interval, one pass of each loop's `run_once(app, owner)` in a worker thread.

Each loop gets its own lease owner id (`leases.new_owner`), unique across replicas and runners,
so replicas that run the same loops against one database claim disjoint rows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

from coldplate.loops import hosts, meter, retention, timers, webhooks
from coldplate.services.leases import new_owner
from coldplate.services.outbox import OUTBOX
from coldplate.state import AppState

log = logging.getLogger(__name__)

RunOnce = Callable[[AppState, str], object]
LOOPS: dict[str, RunOnce] = {
    "timers": timers.run_once, "hosts": hosts.run_once, "retention": retention.run_once,
    "webhooks": webhooks.run_once,
    "meter": meter.run_once,
}
# Loops that also run as soon as a commit touched this wake-up key (not only every interval).
WAKE_ON: dict[str, str] = {"webhooks": OUTBOX}


class Runner:
    """One replica's loops. `run_pass` runs each loop once (what tests drive, one thread per
    replica); `start` schedules them forever on the running event loop (what the server does)."""

    def __init__(self, app: AppState, loops: dict[str, RunOnce] | None = None) -> None:
        self.app = app
        self.loops = LOOPS if loops is None else loops
        self.owners = {name: new_owner(name) for name in self.loops}

    def run_loop(self, name: str) -> object | None:
        """One pass of one loop; a failed pass is logged and returns None (the next pass retries)."""
        try:
            return self.loops[name](self.app, self.owners[name])
        except Exception:
            log.exception("loop pass failed", extra={"loop": name, "owner": self.owners[name]})
            return None

    def run_pass(self) -> dict[str, object | None]:
        return {name: self.run_loop(name) for name in self.loops}

    async def run_forever(self, name: str) -> None:
        signals, key = self.app.signals, WAKE_ON.get(name)
        waiter = signals.subscribe(key) if key is not None else None
        try:
            while True:
                if waiter is not None:
                    waiter.clear()  # before the pass, so a commit during it runs the next one at once
                await run_in_threadpool(self.run_loop, name)
                if waiter is not None and not signals.closing:
                    await signals.wait(waiter, self.app.settings.loop_interval_s)
                else:
                    await asyncio.sleep(self.app.settings.loop_interval_s)
        finally:
            if key is not None and waiter is not None:
                signals.unsubscribe(key, waiter)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.run_forever(name), name=f"loop-{name}") for name in self.loops]


def start_all(app: AppState) -> list[asyncio.Task[None]]:
    """What `server.py` hands `create_app` as its background: this replica's loops."""
    return Runner(app).start()
