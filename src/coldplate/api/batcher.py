"""Calls that many requests make at once, done in groups: one thread hop for a whole group.

A fleet of 10,000 agents checks a token or writes a heartbeat hundreds of times a second. One worker
thread (and, for a heartbeat, one transaction) each left a queue of thousands of them in the thread
pool, in front of every other request, and each hop cost the event loop as much again. A Batcher
runs the first call at once, as a group of one; calls that arrive while a group runs wait for it and
go together as the next group. Under light load nothing waits longer than it would have; under a
fleet's load the groups grow with it and the hops do not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from anyio import CapacityLimiter, to_thread

T = TypeVar("T")
R = TypeVar("R")

MAX_GROUP = 500  # calls in one group: one statement's IN list stays far below SQLite's variable limit


class Batcher(Generic[T, R]):
    """`work(items)` runs in a worker thread (on `limiter`) and returns one answer per item, in order:
    a result, or the exception that item's caller gets. If `work` itself raises, every caller of the
    group gets that exception."""

    def __init__(self, work: Callable[[Sequence[T]], Sequence[R | Exception]], *, limiter: CapacityLimiter,
                 max_group: int = MAX_GROUP) -> None:
        self._work, self._limiter, self._max_group = work, limiter, max_group
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.groups = 0  # groups run so far: what the tests and the bench look at

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._draining is None or self._draining.done() or self._draining.get_loop() is not loop:
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            taken, self._pending = self._pending[:self._max_group], self._pending[self._max_group:]
            # a caller that went away (or whose event loop is gone, between tests) is not answered
            group = [(item, future) for item, future in taken if not future.done() and future.get_loop() is loop]
            if not group:
                continue
            self.groups += 1
            try:
                answers: Sequence[R | Exception] = await to_thread.run_sync(
                    self._work, [item for item, _ in group], limiter=self._limiter)
            except asyncio.CancelledError:  # the event loop is shutting down: nobody is answered
                for _, future in [*group, *self._pending]:
                    future.cancel()
                raise
            except Exception as exc:
                answers = [exc] * len(group)
            for (_, future), answer in zip(group, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
