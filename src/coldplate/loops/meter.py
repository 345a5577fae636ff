"""The billing meter: closes segments open for over an hour and checks instance and project budgets.

Ids are found in one read-only transaction (only those with something to do: on SQLite every
write transaction holds the one write lock); each instance or project is then handled, and
checked again, in its own transaction through a service. Every step is idempotent (the ledger's
unique key, thresholds kept on the row, the month of the last project event), so a pass that dies
half-way is simply run again."""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from coldplate.services import billing, budgets
from coldplate.state import AppState

log = logging.getLogger(__name__)


def run_once(app: AppState, owner: str | None = None) -> int:
    """Returns how many things it changed: segments closed, thresholds announced, instances stopped.
    `owner` is unused: every step is idempotent, so the meter leases nothing."""
    with app.read() as session:  # only what has something to do gets a write transaction
        now = app.clock.now()
        due = billing.due_ids(session, now=now)
        budgeted = budgets.instances_due(session, now=now)
        projects = budgets.projects_due(session, now=now)
    done = 0
    for instance_id in due:
        try:
            with app.tx() as session:
                done += billing.close_due(session, clock=app.clock, instance_id=instance_id)
        except IntegrityError:  # a transition closed the same piece first; its entry stands
            log.info("segment already closed", extra={"instance_id": instance_id})
    for instance_id in budgeted:
        with app.tx() as session:
            done += len(budgets.check_instance(session, clock=app.clock, instance_id=instance_id))
    for project_id in projects:
        with app.tx() as session:
            to_stop = budgets.check_project(session, clock=app.clock, project_id=project_id)
        for instance_id in to_stop:
            with app.tx() as session:
                done += budgets.stop_over_budget(session, clock=app.clock, instance_id=instance_id)
    return done
