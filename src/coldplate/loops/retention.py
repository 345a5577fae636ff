"""Deletes what is kept only for a while: answered agent tasks and old metric samples."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_

from coldplate.db.tables import AgentTask, MetricSample
from coldplate.state import AppState

TASKS_KEPT = timedelta(hours=1)


def run_once(app: AppState) -> int:
    now = app.clock.now()
    with app.tx() as session:
        tasks = session.execute(delete(AgentTask).where(or_(AgentTask.done_at < now - TASKS_KEPT,
                                                            AgentTask.created_at < now - TASKS_KEPT)))
        samples = session.execute(delete(MetricSample).where(
            MetricSample.at < now - timedelta(seconds=app.settings.metrics_retention_s)))
    return int(tasks.rowcount or 0) + int(samples.rowcount or 0)  # type: ignore[attr-defined]
