"""Instance and project budgets, checked by the meter against the live cost (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from coldplate.clock import FakeClock
from coldplate.db.tables import Event, Project
from coldplate.services import budgets
from coldplate.services.errors import BudgetExceeded
from coldplate.state import AppState
from tests.services.billing_world import World

PER_SECOND = 1200  # µ$ while running (see billing_world)


def _events(state: AppState, type_: str) -> list[Event]:
    with state.read() as session:
        return list(session.scalars(select(Event).where(Event.type == type_).order_by(Event.seq)))


def test_instance_budget_alerts_at_50_80_100_once_each_and_terminates(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a", budget_limit_micros=100 * 60 * PER_SECOND)  # 100 minutes of running
    world.run(inst)
    clock.advance(49 * 60)
    world.meter()
    assert _events(state, "instance.budget_threshold") == []
    clock.advance(60)  # 50 minutes: 50 %
    world.meter()
    world.meter()
    clock.advance(40 * 60)  # 90 %
    world.meter()
    assert [e.data["threshold"] for e in _events(state, "instance.budget_threshold")] == [50, 80]
    clock.advance(10 * 60)  # 100 %: noticed at the next pass, terminated at once (force)
    world.meter()
    events = _events(state, "instance.budget_threshold")
    assert [e.data["threshold"] for e in events] == [50, 80, 100]
    assert events[-1].data["cost_so_far"] == "7.200000" and events[-1].data["budget_limit"] == "7.200000"
    row = world.instance(inst)
    assert (row.status, row.status_reason, row.desired, row.force) == ("draining", "budget_exceeded", "terminated",
                                                                       True)
    world.report(inst, "stopped")
    clock.advance(600)
    world.meter()
    assert len(_events(state, "instance.budget_threshold")) == 3
    assert world.instance(inst).status == "terminated"


def test_a_new_limit_is_watched_afresh(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a", budget_limit_micros=10 * 60 * PER_SECOND)
    world.run(inst)
    clock.advance(6 * 60)
    world.meter()
    with state.tx() as session:
        row = world._inst(session, inst)
        budgets.set_instance_limit(session, clock=clock, inst=row, limit_micros=100 * 60 * PER_SECOND)
    clock.advance(60)
    world.meter()
    assert [e.data["threshold"] for e in _events(state, "instance.budget_threshold")] == [50]
    assert world.instance(inst).status == "ready"


def test_a_spent_project_budget_blocks_creates_and_is_announced_once_a_month(state: AppState,
                                                                           clock: FakeClock) -> None:
    world = World(state, clock)
    with state.tx() as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        budgets.set_project_budget(session, project=project, monthly_budget_micros=3600 * PER_SECOND,
                                   on_budget_exceeded=None)
    inst = world.create("a")
    world.run(inst)
    clock.advance(1800)
    world.meter()
    world.create("b")  # half spent: still allowed
    clock.advance(1800)  # spent, though still an open segment: the live cost counts
    with pytest.raises(BudgetExceeded):
        world.create("c")
    world.meter()
    world.meter()
    [event] = _events(state, "project.budget_exceeded")
    assert event.data["month"] == "2026-01" and event.data["on_budget_exceeded"] == "block_creates"
    assert world.instance(inst).status == "ready"  # block_creates leaves running instances alone


def test_stop_instances_stops_the_running_ones(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    with state.tx() as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        budgets.set_project_budget(session, project=project, monthly_budget_micros=60 * PER_SECOND,
                                   on_budget_exceeded="stop_instances")
    running = world.create("a")
    booting = world.create("b")
    world.run(running)  # a started run costs at least its minute: the budget is spent already
    clock.advance(1)
    world.meter()
    rows = [world.instance(running), world.instance(booting)]
    assert [(r.status, r.status_reason, r.desired) for r in rows] == [("draining", "budget_exceeded", "stopped")] * 2


def test_a_new_month_starts_a_new_budget(state: AppState) -> None:
    clock = FakeClock(datetime(2026, 1, 31, 23, 0, tzinfo=UTC))
    state.clock = clock
    world = World(state, clock)
    with state.tx() as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        budgets.set_project_budget(session, project=project, monthly_budget_micros=1800 * PER_SECOND,
                                   on_budget_exceeded="block_creates")
    inst = world.create("a")
    world.run(inst)
    clock.advance(1800)
    world.meter()
    with pytest.raises(BudgetExceeded):
        world.create("b")
    clock.advance(1800 + 600)  # 00:10 on 1 February: ten minutes of this month spent
    world.stop(inst)
    world.create("b")
    assert [e.data["month"] for e in _events(state, "project.budget_exceeded")] == ["2026-01"]


def test_a_meter_pass_with_nothing_due_takes_no_write_transaction(state: AppState, clock: FakeClock) -> None:
    """On SQLite a write transaction holds the one write lock: the meter must not take it every second."""
    from sqlalchemy import event

    from coldplate.db.engine import READ_ONLY

    world = World(state, clock)
    with state.tx() as session:
        project = session.get(Project, world.project_id)
        assert project is not None
        budgets.set_project_budget(session, project=project, monthly_budget_micros=10**9, on_budget_exceeded=None)
    inst = world.create("a", budget_limit_micros=10**9)
    world.run(inst)
    clock.advance(600)
    writes: list[bool] = []
    engine = state.sessions.kw["bind"]

    def on_begin(conn: object) -> None:
        writes.append(not conn.get_execution_options().get(READ_ONLY))  # type: ignore[attr-defined]

    event.listen(engine, "begin", on_begin)
    try:
        assert world.meter() == 0
    finally:
        event.remove(engine, "begin", on_begin)
    assert writes and not any(writes)
