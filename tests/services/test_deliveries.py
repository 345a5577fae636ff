"""Fan-out, leases and attempt records of webhook deliveries, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from coldplate.clock import FakeClock
from coldplate.db.tables import Event, Webhook, WebhookDelivery
from coldplate.domain import webhook_retry
from coldplate.services import deliveries, outbox, projects, webhooks
from coldplate.services.deliveries import Outcome
from coldplate.services.errors import InvalidState
from coldplate.state import AppState

LEASE = timedelta(seconds=30)
OK = Outcome(status_code=200, latency_ms=3, response="ok")
DOWN = Outcome(status_code=503, latency_ms=3, response="down")


def _project(state: AppState) -> str:
    with state.tx() as session:
        return projects.create_project(session, clock=state.clock, name="p").id


def _hook(state: AppState, project_id: str, **kw: object) -> str:
    args = {"url": "http://127.0.0.1:9/hook", "event_types": [], "description": "", "enabled": True} | kw
    with state.tx() as session:
        return webhooks.create(session, clock=state.clock, project_id=project_id, **args).id  # type: ignore[arg-type]


def _event(state: AppState, project_id: str, type: str = "instance.updated", **data: object) -> None:
    with state.tx() as session:
        outbox.record(session, clock=state.clock, project_id=project_id, type=type, instance_id="inst_x",
                      data=dict(data))


def _fan_out(state: AppState) -> int:
    with state.tx() as session:
        return deliveries.fan_out(session, clock=state.clock)


def _claim(state: AppState, owner: str, limit: int = 50) -> list[deliveries.Job]:
    with state.tx() as session:
        return deliveries.claim(session, clock=state.clock, owner=owner, limit=limit, lease=LEASE)


def _record(state: AppState, owner: str, job: deliveries.Job, outcome: Outcome) -> bool:
    with state.tx() as session:
        return deliveries.record(session, clock=state.clock, owner=owner, job=job, outcome=outcome,
                                 rng=random.Random(1))


def _rows(state: AppState) -> list[WebhookDelivery]:
    with state.read() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.event_seq)))


def test_fan_out_matches_project_type_and_creation_time_once(state: AppState, clock: FakeClock) -> None:
    project, other = _project(state), _project(state)
    _event(state, project, n=0)  # before any webhook: not delivered to it
    clock.advance(1)
    every = _hook(state, project)
    only_disabled = _hook(state, project, event_types=["webhook.disabled"])
    _hook(state, project, enabled=False)
    _hook(state, other)
    _event(state, project, n=1)
    _event(state, project, type="webhook.disabled", n=2)
    _event(state, other, n=3)
    assert _fan_out(state) == 4
    assert _fan_out(state) == 0  # every event is marked: a second pass adds nothing
    rows = _rows(state)
    by_hook = {(r.webhook_id, json.loads(r.body)["data"]["n"]) for r in rows}
    assert {(h, n) for h, n in by_hook if h in (every, only_disabled)} == {(every, 1), (every, 2), (only_disabled, 2)}
    assert len(rows) == 4  # the other project's hook got its own event only
    with state.read() as session:
        assert session.scalars(select(Event).where(Event.delivered_at.is_(None))).first() is None


def test_a_lease_keeps_others_off_until_it_expires_and_guards_the_result(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    _hook(state, project)
    _event(state, project)
    _fan_out(state)
    first = _claim(state, "disp_a")
    assert len(first) == 1 and first[0].attempt == 1
    assert _claim(state, "disp_b") == []  # leased
    clock.advance(LEASE.total_seconds() + 1)  # disp_a died mid-send
    second = _claim(state, "disp_b")
    assert [j.delivery_id for j in second] == [first[0].delivery_id]  # same webhook-id on the retry
    assert not _record(state, "disp_a", first[0], OK)  # too late: no longer its lease
    assert _rows(state)[0].status == "pending"
    assert _record(state, "disp_b", second[0], OK)
    row = _rows(state)[0]
    assert (row.status, row.attempts, row.last_status_code, row.lease_owner) == ("delivered", 1, 200, None)


def test_failures_back_off_then_give_up(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    _hook(state, project)
    _event(state, project)
    _fan_out(state)
    for attempt in range(1, webhook_retry.MAX_ATTEMPTS + 1):
        jobs = _claim(state, "d")
        assert len(jobs) == 1 and jobs[0].attempt == attempt
        assert _record(state, "d", jobs[0], DOWN)
        row = _rows(state)[0]
        if attempt < webhook_retry.MAX_ATTEMPTS:
            assert row.status == "pending" and row.next_attempt_at is not None
            wait = (row.next_attempt_at.replace(tzinfo=clock.now().tzinfo) - clock.now()).total_seconds()
            base = webhook_retry.RETRY_DELAYS_S[attempt - 1]
            assert base * 0.8 <= wait <= base * 1.2
            clock.advance(wait * 0.5)
            assert _claim(state, "d") == []  # not due yet
            clock.advance(wait * 0.5 + 0.01)
    row = _rows(state)[0]
    assert (row.status, row.next_attempt_at, row.attempts) == ("failed", None, webhook_retry.MAX_ATTEMPTS)
    assert row.last_response == "down"


def test_gone_disables_the_endpoint_with_an_event(state: AppState) -> None:
    project = _project(state)
    hook_id = _hook(state, project)
    _event(state, project)
    _fan_out(state)
    job = _claim(state, "d")[0]
    _record(state, "d", job, Outcome(status_code=410, latency_ms=1))
    with state.read() as session:
        hook = session.get(Webhook, hook_id)
        assert hook is not None and (hook.enabled, hook.disabled_reason) == (False, "gone")
        disabled = session.scalars(select(Event).where(Event.type == "webhook.disabled")).one()
        assert disabled.data["webhook_id"] == hook_id and disabled.data["reason"] == "gone"
    assert _rows(state)[0].status == "failed"


def test_five_days_of_failures_disable_the_endpoint(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    hook_id = _hook(state, project)
    for _ in range(6):  # a new event each day, each failing
        _event(state, project)
        _fan_out(state)
        for job in _claim(state, "d"):
            _record(state, "d", job, DOWN)
        clock.advance(24 * 3600)
    with state.read() as session:
        hook = session.get(Webhook, hook_id)
        assert hook is not None and (hook.enabled, hook.disabled_reason) == (False, "failing")
        assert len(list(session.scalars(select(Event).where(Event.type == "webhook.disabled")))) == 1


def test_a_success_resets_the_five_day_count(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    hook_id = _hook(state, project)
    for day in range(8):
        _event(state, project)
        _fan_out(state)
        for job in _claim(state, "d"):
            _record(state, "d", job, OK if day == 3 else DOWN)
        clock.advance(24 * 3600)
    with state.read() as session:
        hook = session.get(Webhook, hook_id)
        assert hook is not None and hook.enabled  # failing days 0-2 and 4-7: never five in a row


def test_redeliver_resends_the_same_message_and_refuses_while_leased(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    hook_id = _hook(state, project)
    _event(state, project)
    _fan_out(state)
    job = _claim(state, "d")[0]
    with state.tx() as session, pytest.raises(InvalidState):
        deliveries.redeliver(session, clock=clock, hook=webhooks.get(session, project_id=project,
                                                                     webhook_id=hook_id), delivery_id=job.delivery_id)
    _record(state, "d", job, OK)
    with state.tx() as session:
        hook = webhooks.get(session, project_id=project, webhook_id=hook_id)
        deliveries.redeliver(session, clock=clock, hook=hook, delivery_id=job.delivery_id)
    again = _claim(state, "d")
    assert [(j.delivery_id, j.body, j.attempt) for j in again] == [(job.delivery_id, job.body, 2)]


def test_rotated_secret_signs_with_both_for_a_day(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    hook_id = _hook(state, project)
    with state.tx() as session:
        hook = webhooks.get(session, project_id=project, webhook_id=hook_id)
        old = hook.secret
        new = webhooks.rotate_secret(session, clock=clock, hook=hook).secret
        assert new != old and new.startswith("whsec_")
        assert webhooks.signing_secrets(hook, clock.now()) == [new, old]
        assert webhooks.signing_secrets(hook, clock.now() + timedelta(hours=24, seconds=1)) == [new]


def test_concurrent_claims_skip_locked_rows_on_postgres(state: AppState, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: a second claim waits instead of skipping")
    project = _project(state)
    _hook(state, project)
    for n in range(6):
        _event(state, project, n=n)
    _fan_out(state)
    with state.sessions() as first, first.begin():
        a = deliveries.claim(first, clock=state.clock, owner="a", limit=3, lease=LEASE)
        b = _claim(state, "b")  # while the first claim's transaction still holds its row locks
    assert len(a) == 3 and len(b) == 3
    assert not {j.delivery_id for j in a} & {j.delivery_id for j in b}


def test_a_round_is_recorded_at_once_skipping_lost_leases(state: AppState, clock: FakeClock) -> None:
    project = _project(state)
    first, second = _hook(state, project), _hook(state, project)
    _event(state, project)
    _event(state, project)
    _fan_out(state)
    jobs = _claim(state, "a")
    assert len(jobs) == 4 and {j.webhook_id for j in jobs} == {first, second}
    stolen = jobs[0]
    clock.advance(LEASE.total_seconds() + 1)
    with state.tx() as session:  # another dispatcher re-leases every row; only `stolen` is given back
        taken = deliveries.claim(session, clock=clock, owner="b", limit=50, lease=LEASE)
        for row in session.scalars(select(WebhookDelivery).where(WebhookDelivery.id != stolen.delivery_id)):
            row.lease_owner = "a"
    assert len(taken) == 4
    with state.tx() as session:
        lost = deliveries.record_all(session, clock=clock, owner="a", results=[(j, OK) for j in jobs])
    assert lost == [stolen.delivery_id]
    statuses = {r.id: r.status for r in _rows(state)}
    assert statuses.pop(stolen.delivery_id) == "pending" and set(statuses.values()) == {"delivered"}


def test_retention_keeps_pending_deliveries_and_drops_old_finished_ones(state: AppState, clock: FakeClock) -> None:
    from coldplate.loops import retention

    project = _project(state)
    _hook(state, project)
    for _ in range(3):
        _event(state, project)
    _fan_out(state)
    jobs = _claim(state, "d")
    _record(state, "d", jobs[0], OK)
    _record(state, "d", jobs[1], Outcome(status_code=410, latency_ms=1))  # failed (and the hook disabled)
    clock.advance(29 * 86400)
    retention.run_once(state)
    assert len(_rows(state)) == 3
    clock.advance(2 * 86400)
    retention.run_once(state)
    assert [r.status for r in _rows(state)] == ["pending"]  # jobs[2]: leased then expired, still owed
