"""The FastAPI application: routes, problem handlers, and the background loops' lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from coldplate.api import (
    problems,
    routes_access,
    routes_admin,
    routes_agent,
    routes_catalog,
    routes_instances,
    routes_ssh_keys,
)
from coldplate.api.state import AppState


def create_app(app_state: AppState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        app_state.signals.bind(asyncio.get_running_loop())
        tasks: list[asyncio.Task[None]] = []
        if app_state.settings.run_loops:
            from coldplate.loops.runner import start_all

            tasks = start_all(app_state)
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="coldplate", version="0.1.0", lifespan=lifespan)
    app.state.coldplate = app_state
    problems.install(app)
    for module in (routes_instances, routes_access, routes_catalog, routes_admin, routes_agent, routes_ssh_keys):
        app.include_router(module.router)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
