"""SQLite: writers serialise on `BEGIN IMMEDIATE`; readers do not wait for them (WAL)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from coldplate.clock import FakeClock
from coldplate.db.engine import make_engine, migrate
from coldplate.server import bootstrap_admin, build_state
from coldplate.state import AppState, Settings
from tests.conftest import PG_URL
from tests.pgdb import fresh_database
from tests.threads import at_once


def test_reads_do_not_wait_for_an_open_writer(sqlite_url: str) -> None:
    state: AppState = build_state(sqlite_url, clock=FakeClock(), settings=Settings(run_loops=False))
    with state.tx() as writer:
        writer.execute(text("INSERT INTO projects (id, name, created_at) VALUES ('prj_w', 'w', '2026-01-01')"))
        started = time.monotonic()
        with state.read() as reader:  # would block on the busy timeout (30 s) with BEGIN IMMEDIATE
            count = reader.execute(text("SELECT count(*) FROM projects")).scalar_one()
        assert time.monotonic() - started < 1.0
        assert count == 0  # the writer has not committed
    with state.read() as reader:
        assert reader.execute(text("SELECT count(*) FROM projects")).scalar_one() == 1


def test_migrations_build_exactly_the_models(db_url: str) -> None:
    """A column added to tables.py without a migration (or the reverse) shows up here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from coldplate.db.engine import make_engine, migrate
    from coldplate.db.tables import Base

    engine = make_engine(db_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


@pytest.mark.skipif(not PG_URL, reason="needs COLDPLATE_TEST_POSTGRES_URL")
def test_replicas_starting_together_on_a_fresh_postgres_both_migrate() -> None:
    """Both migrated at once, one failed on a duplicate `alembic_version` table (seen when the
    scale bench started two replicas); the migration now runs under an advisory lock."""
    assert PG_URL is not None
    for url in fresh_database(PG_URL):
        engines = [make_engine(url) for _ in range(3)]
        try:
            assert at_once([lambda e=e: migrate(e) is None for e in engines]) == [True] * 3  # none raised
            with engines[0].connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        finally:
            for engine in engines:
                engine.dispose()


@pytest.mark.skipif(not PG_URL, reason="needs COLDPLATE_TEST_POSTGRES_URL")
def test_replicas_starting_together_create_one_admin_key(tmp_path: Path) -> None:
    assert PG_URL is not None
    for url in fresh_database(PG_URL):
        states = [build_state(url, clock=FakeClock(), settings=Settings(run_loops=False)) for _ in range(3)]
        try:
            created = at_once([lambda s=s, i=i: bootstrap_admin(s, data_dir=tmp_path / f"r{i}", env_key=None) or ""
                               for i, s in enumerate(states)])
            assert None not in created  # no replica raised (a thread that raised leaves None)
            assert len([key for key in created if key]) == 1  # one replica made it, the others found it
        finally:
            for s in states:
                s.sessions.kw["bind"].dispose()
