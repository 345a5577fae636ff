"""Budgets: an instance's `budget_limit` (alerts at 50/80/100 %, terminate at 100 %) and a project's
monthly budget (block creates, or stop running instances too). The meter checks both every pass
against the live cost (closed ledger entries plus the open segment), so a crossing is seen within
one loop interval."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coldplate.clock import Clock
from coldplate.db.tables import Instance, Project
from coldplate.domain import billing, pricing
from coldplate.domain.lifecycle import Desired, Status, action_allowed
from coldplate.services import actions, outbox
from coldplate.services.billing import cost_so_far
from coldplate.services.spend import month_spend

POLICIES = ("block_creates", "stop_instances")
RUNNING = (Status.PROVISIONING.value, Status.STARTING.value, Status.READY.value)
REASON = "budget_exceeded"


def set_instance_limit(session: Session, *, clock: Clock, inst: Instance, limit_micros: int | None) -> None:
    """A new limit is watched afresh: each threshold is announced once per limit."""
    inst.budget_limit_micros = limit_micros
    inst.budget_alerted = 0
    inst.updated_at = clock.now()
    session.flush()


def instances_due(session: Session, *, now: datetime) -> list[str]:
    """Read-only: budgeted instances whose live cost has reached a threshold not yet announced
    (so the meter takes a write transaction only for those)."""
    rows = session.scalars(select(Instance).where(
        Instance.budget_limit_micros.is_not(None), Instance.budget_alerted < 100,
        Instance.status != Status.TERMINATED.value))
    return [i.id for i in rows if i.budget_limit_micros is not None
            and billing.crossed(cost_so_far(i, now), i.budget_limit_micros, i.budget_alerted)]


def check_instance(session: Session, *, clock: Clock, instance_id: str) -> list[int]:
    """Announce each threshold the live cost has reached; at 100 % terminate. Returns the thresholds announced."""
    inst = session.scalars(select(Instance).where(Instance.id == instance_id).with_for_update()).first()
    if inst is None or inst.budget_limit_micros is None:
        return []
    cost = cost_so_far(inst, clock.now())
    reached = billing.crossed(cost, inst.budget_limit_micros, inst.budget_alerted)
    for threshold in reached:
        outbox.record(session, clock=clock, project_id=inst.project_id, instance_id=inst.id,
                      type="instance.budget_threshold",
                      data={"threshold": threshold, "budget_limit": pricing.format_micros(inst.budget_limit_micros),
                            "cost_so_far": pricing.format_micros(cost)})
        inst.budget_alerted = threshold
    if reached and reached[-1] == 100:
        terminating = inst.status == Status.DRAINING.value and inst.desired == Desired.TERMINATED.value
        if action_allowed("terminate", Status(inst.status)) and not terminating:
            actions.terminate(session, clock=clock, inst=inst, force=True, reason=REASON)
    session.flush()
    return reached


def set_project_budget(session: Session, *, project: Project, monthly_budget_micros: int | None,
                       on_budget_exceeded: str | None) -> Project:
    """No budget, no policy; a budget without a policy blocks creates."""
    project.monthly_budget_micros = monthly_budget_micros
    project.on_budget_exceeded = None if monthly_budget_micros is None else (on_budget_exceeded or POLICIES[0])
    session.flush()
    return project


def projects_due(session: Session, *, now: datetime) -> list[str]:
    """Read-only: projects over their monthly budget with something left to do (announce the
    month, or stop running instances)."""
    due: list[str] = []
    for project in session.scalars(select(Project).where(Project.monthly_budget_micros.is_not(None))):
        assert project.monthly_budget_micros is not None
        if month_spend(session, project_id=project.id, now=now) < project.monthly_budget_micros:
            continue
        running = project.on_budget_exceeded == "stop_instances" and session.scalar(
            select(Instance.id).where(Instance.project_id == project.id, Instance.status.in_(RUNNING)).limit(1))
        if project.budget_exceeded_month != billing.month_key(now) or running:
            due.append(project.id)
    return due


def check_project(session: Session, *, clock: Clock, project_id: str) -> list[str]:
    """Announce a spent monthly budget once per month; with `stop_instances`, the instances to stop."""
    project = session.get(Project, project_id, with_for_update=True)
    if project is None or project.monthly_budget_micros is None:
        return []
    now = clock.now()
    spend = month_spend(session, project_id=project_id, now=now)
    if spend < project.monthly_budget_micros:
        return []
    month = billing.month_key(now)
    if project.budget_exceeded_month != month:
        project.budget_exceeded_month = month
        outbox.record(session, clock=clock, project_id=project_id, type="project.budget_exceeded",
                      data={"month": month, "monthly_budget": pricing.format_micros(project.monthly_budget_micros),
                            "spent": pricing.format_micros(spend),
                            "on_budget_exceeded": project.on_budget_exceeded or "block_creates"})
    session.flush()
    if project.on_budget_exceeded != "stop_instances":
        return []
    return list(session.scalars(select(Instance.id).where(Instance.project_id == project_id,
                                                          Instance.status.in_(RUNNING))))


def stop_over_budget(session: Session, *, clock: Clock, instance_id: str) -> bool:
    inst = session.scalars(select(Instance).where(Instance.id == instance_id).with_for_update()).first()
    if inst is None or inst.status not in RUNNING:
        return False
    actions.stop(session, clock=clock, inst=inst, reason=REASON)
    return True

