"""The retention loop: answered (or long-unanswered) agent tasks after an hour, metric samples
after `metrics_retention_s`, deleted through the services' purge functions in bounded batches."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from coldplate.clock import FakeClock
from coldplate.db.tables import AgentTask, Hostnode, Instance, MetricSample
from coldplate.loops import retention
from coldplate.services import agent_tasks, metrics
from coldplate.state import AppState
from tests.loops.conftest import World


def _task(state: AppState, instance_id: str, *, answer: bool) -> str:
    with state.tx() as session:
        inst = session.get(Instance, instance_id)
        assert inst is not None and inst.hostnode_id is not None
        task = agent_tasks.create(session, clock=state.clock, inst=inst, kind="logs", params={}, need_running=False)
        if answer:
            host = session.get(Hostnode, inst.hostnode_id)
            assert host is not None
            agent_tasks.complete(session, clock=state.clock, host=host, task_id=task.id, result={"lines": []})
        return task.id


def _sample(state: AppState, host_id: str, instance_id: str, util: float) -> None:
    with state.tx() as session:
        metrics.record(session, clock=state.clock, samples=[(host_id, instance_id, {"gpu_util_pct": util})])


def _task_ids(state: AppState) -> set[str]:
    with state.read() as session:
        return set(session.scalars(select(AgentTask.id)))


def _utils(state: AppState) -> list[float]:
    with state.read() as session:
        return sorted(s.values["gpu_util_pct"] for s in session.scalars(select(MetricSample)))


def test_answered_tasks_go_after_an_hour_unanswered_ones_an_hour_after_they_were_asked(
        state: AppState, world: World, clock: FakeClock) -> None:
    iid = world.instance("i", host_id=world.host("h1"))
    answered = _task(state, iid, answer=True)
    clock.advance(50 * 60)
    waiting = _task(state, iid, answer=False)
    clock.advance(10 * 60)
    assert retention.run_once(state) == 0  # exactly an hour: kept
    clock.advance(1)
    assert retention.run_once(state) == 1
    assert _task_ids(state) == {waiting}
    clock.advance(50 * 60)
    assert retention.run_once(state) == 1
    assert _task_ids(state) == set() and answered != waiting


def test_samples_older_than_the_retention_go(state: AppState, world: World, clock: FakeClock) -> None:
    host = world.host("h1")
    iid = world.instance("i", host_id=host)
    _sample(state, host, iid, 10.0)
    clock.advance(3600)
    _sample(state, host, iid, 20.0)
    clock.advance(state.settings.metrics_retention_s - 3600 + 1)
    assert retention.run_once(state) == 1
    assert _utils(state) == [20.0]


def test_a_pass_deletes_everything_due_in_batches(state: AppState, world: World, clock: FakeClock,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    host = world.host("h1")
    iid = world.instance("i", host_id=host)
    for n in range(7):
        _sample(state, host, iid, float(n))
    clock.advance(state.settings.metrics_retention_s + 1)
    with state.tx() as session:  # one batch is bounded by its limit
        assert metrics.purge(session, before=clock.now(), limit=3) == 3
    monkeypatch.setattr(retention, "BATCH", 2)
    assert retention.run_once(state) == 4  # the rest, two at a time, in one pass
    with state.read() as session:
        assert session.scalar(select(func.count()).select_from(MetricSample)) == 0
