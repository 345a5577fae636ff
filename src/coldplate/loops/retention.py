"""Deletes what is kept only for a while: answered agent tasks, old metric samples and finished
webhook deliveries (the delivery log).

Unlike the other loops it works in batches, not one transaction per row: a delete changes no
lifecycle and writes no event, and two replicas deleting the same rows is harmless, so it needs
neither a lease nor a re-check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from coldplate.services import agent_tasks, deliveries, metrics
from coldplate.state import AppState

TASKS_KEPT = timedelta(hours=1)
DELIVERIES_KEPT = timedelta(days=30)  # pending ones stay however old: they are still owed
BATCH = 1000


def _drain(app: AppState, purge: Callable[[Session], int]) -> int:
    deleted = 0
    while True:
        with app.tx() as session:
            batch = purge(session)
        deleted += batch
        if batch < BATCH:
            return deleted


def run_once(app: AppState, owner: str | None = None) -> int:
    """Returns how many rows this pass deleted. `owner` is unused: retention leases nothing."""
    now = app.clock.now()
    tasks_before: datetime = now - TASKS_KEPT
    samples_before: datetime = now - timedelta(seconds=app.settings.metrics_retention_s)
    deliveries_before: datetime = now - DELIVERIES_KEPT
    return (_drain(app, lambda s: agent_tasks.purge(s, before=tasks_before, limit=BATCH))
            + _drain(app, lambda s: metrics.purge(s, before=samples_before, limit=BATCH))
            + _drain(app, lambda s: deliveries.purge(s, before=deliveries_before, limit=BATCH)))
