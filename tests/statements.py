"""Records the SQL an engine runs while a block runs: for tests that count queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from coldplate.state import AppState


class Statements:
    """`with Statements(state) as statements:` collects every statement the state's engine sends,
    except the PostgreSQL wake-up listener's own liveness ping (`pg_notify`)."""

    def __init__(self, state: AppState) -> None:
        self.engine = state.sessions.kw["bind"]
        self.seen: list[str] = []

    def _on(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "pg_notify" not in statement:
            self.seen.append(statement)

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)

    def count(self, prefix: str, table: str) -> int:
        return sum(1 for s in self.seen if s.lstrip().upper().startswith(prefix) and table in s)
