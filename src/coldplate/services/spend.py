"""A project's spend this month, and the refusal of creates once its monthly budget is spent.

Apart from services/budgets.py because instance creation calls it and budgets.py calls the actions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Instance, LedgerEntry, Project
from coldplate.domain import billing, pricing
from coldplate.services.billing import open_charges
from coldplate.services.errors import BudgetExceeded

PROJECT_BUDGET = select(Project.monthly_budget_micros).where(Project.id == bindparam("project_id"))
PROJECT_BUDGET_SQL = "SELECT monthly_budget_micros FROM projects WHERE id = ?"


def month_spend(session: Session, *, project_id: str, now: datetime) -> int:
    """This month's ledger entries plus the part of each open segment that falls in this month."""
    start, end = billing.month_start(now), billing.next_month(now)
    closed = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_micros), 0)).where(
        LedgerEntry.project_id == project_id, LedgerEntry.period_start >= start, LedgerEntry.period_start < end))
    live = 0
    for inst in session.scalars(select(Instance).where(Instance.project_id == project_id,
                                                       Instance.seg_kind.is_not(None))):
        live += sum(c.amount_micros for c in open_charges(inst, now) if c.period_start >= start)
    return int(closed or 0) + live


def _monthly_budget(session: Session, project_id: str) -> int | None:
    """On SQLite straight to sqlite3, in the transaction already begun there (as engine.py's BEGIN):
    SQLAlchemy's execute costs 40 µs of a 740 µs placement (docs/benchmarks.md), sqlite3's 1 µs."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        assert raw is not None
        row = raw.execute(PROJECT_BUDGET_SQL, (project_id,)).fetchone()
        budget = None if row is None else row[0]
    else:
        budget = conn.execute(PROJECT_BUDGET, {"project_id": project_id}).scalar()
    return None if budget is None else int(budget)


def check_create(session: Session, *, clock: Clock, project_id: str) -> None:
    """Creates are refused once the project's monthly budget is spent (with either policy).

    Every placement runs this, and nothing more unless the project has a budget."""
    budget = _monthly_budget(session, project_id)
    if budget is None:
        return
    if month_spend(session, project_id=project_id, now=clock.now()) >= budget:
        raise BudgetExceeded(f"project {project_id} has spent its monthly budget of "
                             f"{pricing.format_micros(budget)}", param="monthly_budget")
