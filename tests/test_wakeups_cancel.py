"""A wait that is cancelled stays cancelled, even when its wake-up comes at the same moment.

Python 3.11's `asyncio.wait_for` returns the inner result in that case and drops the
cancellation; a loop waiting that way never ends, and the server's shutdown waits for it forever
(found as a hung `TestClient` exit in the loops' tests)."""

from __future__ import annotations

import asyncio

import pytest

from coldplate.wakeups import Signals


async def test_a_cancelled_wait_is_cancelled_even_if_woken_at_the_same_moment() -> None:
    signals = Signals()
    signals.bind(asyncio.get_running_loop())
    waiter = signals.subscribe("outbox")
    task = asyncio.create_task(signals.wait(waiter, 10))
    await asyncio.sleep(0)  # the task now waits
    waiter.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_wait_ends_at_its_timeout_or_its_wake_up() -> None:
    signals = Signals()
    signals.bind(asyncio.get_running_loop())
    waiter = signals.subscribe("k")
    await signals.wait(waiter, 0.01)  # nothing came: the timeout ends it quietly
    waiter.set()
    await asyncio.wait_for(signals.wait(waiter, 10), timeout=1)  # already woken: at once
