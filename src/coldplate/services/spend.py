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


def check_create(session: Session, *, clock: Clock, project_id: str) -> None:
    """Creates are refused once the project's monthly budget is spent (with either policy).

    Every placement runs this: one Core statement built once (an ORM load of the project cost
    several times more), and nothing else unless the project has a budget."""
    budget = session.connection().execute(PROJECT_BUDGET, {"project_id": project_id}).scalar()
    if budget is None:
        return
    if month_spend(session, project_id=project_id, now=clock.now()) >= budget:
        raise BudgetExceeded(f"project {project_id} has spent its monthly budget of "
                             f"{pricing.format_micros(budget)}", param="monthly_budget")
