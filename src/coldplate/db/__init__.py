"""Tables, the engine (SQLite WAL or PostgreSQL) and Alembic migrations."""
