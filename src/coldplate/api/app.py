"""The FastAPI application: routes, problem handlers, and the lifetime of whatever runs beside it.

The app does not know the loops: `server.py` passes them in as `background`, so `api/` and `loops/`
do not import each other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from coldplate.api import (
    problems,
    routes_access,
    routes_admin,
    routes_agent,
    routes_billing,
    routes_catalog,
    routes_events,
    routes_instances,
    routes_join_tokens,
    routes_ssh_keys,
    routes_webhooks,
)
from coldplate.api.agent_gate import AgentGate
from coldplate.api.arrival import Arrival
from coldplate.api.body_limit import BodyLimit
from coldplate.api.responses import Health
from coldplate.state import AppState

Background = Callable[[AppState], list[asyncio.Task[None]]]


def create_app(app_state: AppState, *, background: Background | None = None) -> FastAPI:
    """`background` starts tasks on the app's event loop (the server's loops); they are cancelled at exit."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        app_state.signals.bind(asyncio.get_running_loop())
        stop_listening = app_state.listen()
        tasks = background(app_state) if background is not None else []
        try:
            yield
        finally:  # also when the app's run ends in an error: the listener thread would reconnect for ever
            stop_listening()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # FastAPI's own OpenTelemetry hooks are off: coldplate exports none, and asking on every request
    # whether a provider was configured cost about a twentieth of the server's CPU under a fleet.
    app = FastAPI(title="coldplate", version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.coldplate = app_state
    app.state.agent_gate = AgentGate(app_state)
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=app_state.settings.max_body_bytes)
    app.add_middleware(Arrival)  # added last: runs first
    # Routes are matched in order, one by one: the agents' calls, most of the traffic of a large
    # fleet, come first (their paths share no prefix with the others, so the order changes no match).
    for module in (routes_agent, routes_instances, routes_access, routes_catalog, routes_admin, routes_ssh_keys,
                   routes_join_tokens, routes_events, routes_webhooks, routes_billing):
        app.include_router(module.router)

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
