"""Starting the control plane: database, migrations, the admin key, the app, uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from coldplate.api.app import create_app
from coldplate.clock import Clock, SystemClock
from coldplate.collector import collect_rarely
from coldplate.db.engine import make_engine, make_sessionmaker, migrate, sqlite_url, startup_lock
from coldplate.files import create_private, private_dir, tighten, write_private
from coldplate.loops.runner import start_all
from coldplate.services import projects
from coldplate.state import AppState, Settings

log = logging.getLogger(__name__)


def database_url(data_dir: Path, url: str | None) -> str:
    """The database to use; SQLite's file (with its -wal and -shm, which take its mode) is 0600 in a
    0700 data directory: it holds tenants' env and keys' hashes."""
    if url:
        return url
    private_dir(data_dir)
    db = data_dir / "coldplate.db"
    create_private(db)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(db.with_name(db.name + suffix))
    return sqlite_url(db)


def build_state(url: str, *, clock: Clock | None = None, settings: Settings | None = None) -> AppState:
    engine = make_engine(url)
    migrate(engine)
    return AppState(sessions=make_sessionmaker(engine), clock=clock or SystemClock(),
                    settings=settings or Settings())


def bootstrap_admin(app_state: AppState, *, data_dir: Path, env_key: str | None) -> str | None:
    """Makes sure an admin key exists; a new one is written to `<data_dir>/admin-key` and returned."""
    with app_state.tx() as session:
        startup_lock(session.connection())
        created = projects.ensure_admin(session, clock=app_state.clock, key=env_key)
    key_file = data_dir / "admin-key"
    key = created or env_key
    private_dir(data_dir)
    if key is not None:
        write_private(key_file, key + "\n")
    tighten(key_file)
    return created


def make_server_app(*, data_dir: Path, url: str | None,
                    settings: Settings | None = None) -> tuple[FastAPI, AppState, str | None]:
    app_state = build_state(database_url(data_dir, url), settings=settings)
    created = bootstrap_admin(app_state, data_dir=data_dir, env_key=os.environ.get("COLDPLATE_ADMIN_KEY"))

    def background(state: AppState) -> list[asyncio.Task[None]]:
        loops = start_all(state) if state.settings.run_loops else []
        return [*loops, asyncio.create_task(collect_rarely())]

    return create_app(app_state, background=background), app_state, created


class _Server(uvicorn.Server):
    """Long-polls hold connections for up to a minute; on a signal to exit they answer at once
    (agents and waiters simply ask again), so the graceful shutdown has nothing to wait for."""

    def __init__(self, config: uvicorn.Config, app_state: AppState) -> None:
        super().__init__(config)
        self.app_state = app_state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.app_state.signals.close()
        super().handle_exit(sig, frame)


def serve(app: FastAPI, *, host: str, port: int) -> None:
    app_state: AppState = app.state.coldplate
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    _Server(config, app_state).run()
