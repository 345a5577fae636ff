"""Engine and session factory. SQLite runs in WAL mode with `BEGIN IMMEDIATE` (one writer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "coldplate_read_only"
STARTUP_LOCK = 0x636F6C64  # "cold": the advisory lock of startup_lock


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A connection per worker thread (anyio's 40, and the loops'): a smaller pool closes and reopens
        # connections under load, and each new one runs the PRAGMAs below.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=40,
                               max_overflow=20)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Writers take the lock up front (no deadlock on upgrade); readers do not need it in WAL.
            # Straight to sqlite3: this runs for every transaction, and SQLAlchemy's execute costs more.
            begin = "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
            conn.connection.driver_connection.execute(begin)

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def startup_lock(conn: Connection) -> None:
    """PostgreSQL: hold, until this transaction ends, the lock under which replicas starting together
    migrate the schema and create the admin key one at a time (at once, they raced on
    `alembic_version` and on the admin project, and one of them died)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK})


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        startup_lock(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

