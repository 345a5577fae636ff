"""Runs each loop's `run_once` every interval in a worker thread until cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

from coldplate.loops import hosts, retention, timers, webhooks
from coldplate.services.outbox import OUTBOX
from coldplate.state import AppState

log = logging.getLogger(__name__)

LOOPS: dict[str, Callable[[AppState], object]] = {
    "timers": timers.run_once, "hosts": hosts.run_once, "retention": retention.run_once,
    "webhooks": webhooks.run_once,
}
# Loops that also run as soon as a commit touched this wake-up key (not only every interval).
WAKE_ON: dict[str, str] = {"webhooks": OUTBOX}


async def run_forever(app: AppState, name: str, once: Callable[[AppState], object]) -> None:
    key = WAKE_ON.get(name)
    waiter = app.signals.subscribe(key) if key is not None else None
    try:
        while True:
            if waiter is not None:
                waiter.clear()  # before the pass, so a commit during it runs the next one at once
            try:
                await run_in_threadpool(once, app)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("loop pass failed", extra={"loop": name})
            if waiter is not None and not app.signals.closing:
                await app.signals.wait(waiter, app.settings.loop_interval_s)
            else:
                await asyncio.sleep(app.settings.loop_interval_s)
    finally:
        if key is not None and waiter is not None:
            app.signals.unsubscribe(key, waiter)


def start_all(app: AppState) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(run_forever(app, name, once), name=f"loop-{name}") for name, once in LOOPS.items()]
