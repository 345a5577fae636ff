"""When a request arrived, before it queued for a worker thread or a dependency ran.

A long-poll's deadline counts from here: under a burst (a fleet registering at once) a request can
wait seconds for a worker thread to check its token, and a poll that then waited its whole `wait`
on top ran past the agent's read timeout."""

from __future__ import annotations

import time

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

KEY = "coldplate.arrived"


class Arrival:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[KEY] = time.monotonic()
        await self.app(scope, receive, send)


def arrived(request: Request) -> float:
    """The `time.monotonic()` at which the request reached the app (now, outside the middleware)."""
    return float(request.scope.get(KEY, time.monotonic()))
