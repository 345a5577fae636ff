"""Runs each loop's `run_once` every interval in a worker thread until cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

from coldplate.loops import hosts, meter, retention, timers
from coldplate.state import AppState

log = logging.getLogger(__name__)

LOOPS: dict[str, Callable[[AppState], object]] = {
    "timers": timers.run_once, "hosts": hosts.run_once, "retention": retention.run_once,
    "meter": meter.run_once,
}


async def run_forever(app: AppState, name: str, once: Callable[[AppState], object]) -> None:
    while True:
        try:
            await run_in_threadpool(once, app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loop pass failed", extra={"loop": name})
        await asyncio.sleep(app.settings.loop_interval_s)


def start_all(app: AppState) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(run_forever(app, name, once), name=f"loop-{name}") for name, once in LOOPS.items()]
