"""Deletes what is kept only for a while: answered agent tasks, old metric samples, and finished
webhook deliveries (the delivery log)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_

from coldplate.db.tables import AgentTask, MetricSample, WebhookDelivery
from coldplate.state import AppState

TASKS_KEPT = timedelta(hours=1)
DELIVERIES_KEPT = timedelta(days=30)  # pending ones stay however old: they are still owed


def run_once(app: AppState) -> int:
    now = app.clock.now()
    with app.tx() as session:
        tasks = session.execute(delete(AgentTask).where(or_(AgentTask.done_at < now - TASKS_KEPT,
                                                            AgentTask.created_at < now - TASKS_KEPT)))
        samples = session.execute(delete(MetricSample).where(
            MetricSample.at < now - timedelta(seconds=app.settings.metrics_retention_s)))
        deliveries = session.execute(delete(WebhookDelivery).where(
            WebhookDelivery.status != "pending", WebhookDelivery.created_at < now - DELIVERIES_KEPT))
    counts = [result.rowcount for result in (tasks, samples, deliveries)]  # type: ignore[attr-defined]
    return sum(int(count or 0) for count in counts)
