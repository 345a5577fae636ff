"""The server's data directory: 0700, and the SQLite database (with -wal and -shm) and the admin
key 0600, both when created (even under umask 0) and when found looser from an older start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from coldplate.ids import new_id
from coldplate.server import make_server_app
from coldplate.state import AppState


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start(data_dir: Path) -> AppState:
    _, app_state, _ = make_server_app(data_dir=data_dir, url=None)
    with app_state.tx() as session:  # a write: SQLite makes its -wal and -shm now if not before
        session.execute(text("INSERT INTO projects (id, name, created_at) VALUES (:id, 'x', '2026-01-01')"),
                        {"id": new_id("prj")})
    return app_state


def private(data_dir: Path) -> None:
    assert mode(data_dir) == 0o700
    for name in ("coldplate.db", "coldplate.db-wal", "coldplate.db-shm", "admin-key"):
        assert mode(data_dir / name) == 0o600, name


def test_new_data_dir_is_private_from_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLDPLATE_ADMIN_KEY", raising=False)
    old = os.umask(0)
    try:
        app_state = start(tmp_path / "data")
        private(tmp_path / "data")
    finally:
        os.umask(old)
        app_state.sessions.kw["bind"].dispose()


def test_loose_data_dir_from_an_older_start_is_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDPLATE_ADMIN_KEY", "cp_env_admin")
    data_dir = tmp_path / "data"
    first = start(data_dir)
    first.sessions.kw["bind"].dispose()
    data_dir.chmod(0o755)
    for path in data_dir.iterdir():
        path.chmod(0o644)
    (data_dir / "coldplate.db-wal").touch(mode=0o644)  # as a crashed writer might leave it
    second = start(data_dir)
    try:
        private(data_dir)
        assert (data_dir / "admin-key").read_text() == "cp_env_admin\n"
    finally:
        second.sessions.kw["bind"].dispose()
