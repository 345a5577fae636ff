"""The dispatcher runs as soon as a commit wrote an event, not at the next loop interval."""

from __future__ import annotations

import asyncio
import threading
import time

from coldplate.loops import runner
from coldplate.loops import webhooks as dispatcher
from coldplate.services import outbox, projects, webhooks
from coldplate.state import AppState
from tests.webhook_receiver import receiving


def test_a_commit_wakes_the_dispatcher(state: AppState) -> None:
    state.settings.loop_interval_s = 30  # a pass every 30 s (at most 1 s when waiting on a wake-up key)
    state.settings.allow_private_webhooks = True
    loop = asyncio.new_event_loop()
    state.signals.bind(loop)
    task = loop.create_task(runner.Runner(state, {"webhooks": dispatcher.run_once}).run_forever("webhooks"))
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])), daemon=True)
    with receiving() as receiver:
        with state.tx() as session:
            project = projects.create_project(session, clock=state.clock, name="p").id
            webhooks.create(session, clock=state.clock, project_id=project, url=receiver.url, event_types=[],
                            description="", enabled=True)
        thread.start()
        time.sleep(0.2)  # the first pass has run; the loop now waits for a wake-up
        lags = []
        for n in range(3):
            with state.tx() as session:
                outbox.record(session, clock=state.clock, project_id=project, type="instance.updated", data={"n": n})
            committed = time.monotonic()
            while len(receiver.received) <= n and time.monotonic() - committed < 5:
                time.sleep(0.005)
            lags.append(time.monotonic() - committed)
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=5)
    assert len(receiver.received) == 3
    assert max(lags) < 0.5, lags  # waiting for the next pass instead would take about a second each
