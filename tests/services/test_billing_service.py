"""Segments and the ledger through the real services, on SQLite and PostgreSQL, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from coldplate.clock import FakeClock, as_utc
from coldplate.db.tables import Hostnode, Instance, LedgerEntry
from coldplate.domain.lifecycle import Status
from coldplate.services import actions, billing
from coldplate.services.errors import InvalidInput, InvalidState
from coldplate.state import AppState
from tests.services.billing_world import World

PER_SECOND = 1200  # µ$: 3.60 $/h for the GPU + 20 GB × 0.036 $/h for its disk, while running
DISK_PER_SECOND = 200  # µ$: 20 GB × 0.036 $/h while stopped


def _contiguous(entries: list[LedgerEntry]) -> bool:
    return all(as_utc(a.period_end) == as_utc(b.period_start) for a, b in zip(entries, entries[1:], strict=False))


def test_compute_from_ready_to_stop_then_disk_until_terminate_then_nothing(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a")
    clock.advance(30)  # provisioning and starting are free
    world.run(inst)
    clock.advance(100)
    world.stop(inst)  # draining is billed too, but it took no time here
    clock.advance(3000)
    world.terminate(inst)
    clock.advance(7200)
    world.meter()  # the deleted disk is not charged
    entries = world.entries(inst)
    assert [(e.kind, e.seconds, e.amount_micros) for e in entries] == [
        ("compute", 100, 100 * PER_SECOND), ("storage", 3000, 3000 * DISK_PER_SECOND)]
    assert world.instance(inst).billed_micros == 100 * PER_SECOND + 3000 * DISK_PER_SECOND
    assert world.instance(inst).seg_kind is None


def test_draining_is_billed_and_a_short_run_costs_a_minute(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a")
    world.run(inst)
    clock.advance(5)
    world.act(inst, "terminate")
    clock.advance(20)  # the grace period
    world.report(inst, "stopped")  # → terminated
    [entry] = world.entries(inst)
    assert (entry.kind, entry.seconds, entry.amount_micros) == ("compute", 60, 60 * PER_SECOND)
    assert as_utc(entry.period_end) - as_utc(entry.period_start) == timedelta(seconds=25)


def test_failing_before_ready_costs_nothing_and_after_ready_the_time_run(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    early = world.create("early")
    world.report(early, "starting")
    clock.advance(500)
    world.report(early, "failed")
    late = world.create("late")
    world.run(late)
    clock.advance(10)
    world.report(late, "failed")  # a failure is not a finished run: no minimum
    clock.advance(1000)
    world.terminate(late)
    assert world.entries(early) == []
    assert [(e.kind, e.seconds) for e in world.entries(late)] == [("compute", 10)]


def test_a_repeated_report_and_a_repeated_meter_charge_nothing_twice(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a")
    world.run(inst)
    clock.advance(4000)
    assert world.meter() == 1
    assert world.meter() == 0
    world.report(inst, "ready")  # an agent retrying its report
    clock.advance(100)
    world.stop(inst)
    world.report(inst, "stopped")
    before = [(e.id, e.seconds, e.amount_micros) for e in world.entries(inst)]
    world.meter()
    assert [(e.id, e.seconds, e.amount_micros) for e in world.entries(inst)] == before
    assert sum(e.seconds for e in world.entries(inst) if e.kind == "compute") == 4100


def test_the_meter_closes_long_segments_hourly_without_gap_or_overlap(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a")
    world.run(inst)
    for _ in range(5):
        clock.advance(1800)
        world.meter()
    clock.advance(77)
    world.stop(inst)
    compute = [e for e in world.entries(inst) if e.kind == "compute"]
    assert len(compute) == 3  # closed at 1 h, 2 h, and by the stop
    assert _contiguous(compute)
    assert sum(e.seconds for e in compute) == 5 * 1800 + 77
    assert sum(e.amount_micros for e in compute) == (5 * 1800 + 77) * PER_SECOND


def test_a_stale_writer_cannot_charge_a_piece_again(state: AppState, clock: FakeClock) -> None:
    """Two writers that read the same open segment: the second one's entry hits the unique key."""
    world = World(state, clock)
    inst_id = world.create("a")
    world.run(inst_id)
    clock.advance(4000)
    stale = world.instance(inst_id)
    stale_start, stale_billed = stale.seg_start, stale.seg_billed_s
    world.meter()
    with pytest.raises(IntegrityError), state.tx() as session:
        inst = session.get(Instance, inst_id)
        assert inst is not None
        inst.seg_start, inst.seg_billed_s = stale_start, stale_billed  # what a racing writer would still see
        billing.close_due(session, clock=clock, instance_id=inst_id)
    assert len(world.entries(inst_id)) == 1


def test_a_crash_in_the_middle_leaves_the_segment_open_for_the_next_pass(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst_id = world.create("a")
    world.run(inst_id)
    clock.advance(4000)
    with pytest.raises(RuntimeError), state.tx() as session:
        billing.close_due(session, clock=clock, instance_id=inst_id)
        raise RuntimeError("killed after the insert, before the commit")
    assert world.entries(inst_id) == []
    world.meter()
    [entry] = world.entries(inst_id)
    assert entry.seconds == 4000


def test_a_run_across_a_month_boundary_is_billed_to_both_months(state: AppState) -> None:
    clock = FakeClock(datetime(2026, 1, 31, 23, 0, tzinfo=UTC))
    state.clock = clock
    world = World(state, clock)
    inst = world.create("a")
    world.run(inst)
    clock.advance(2 * 3600)
    world.stop(inst)
    compute = [e for e in world.entries(inst) if e.kind == "compute"]
    assert [(as_utc(e.period_start).month, e.seconds) for e in compute] == [(1, 3600), (2, 3600)]
    assert _contiguous(compute)


def test_a_reservation_is_paid_once_at_first_ready_and_never_per_second(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a", duration_hours=2)
    clock.advance(600)  # provisioning does not eat the reservation
    world.run(inst)
    ready = clock.now()
    assert as_utc(world.instance(inst).expires_at) == ready + timedelta(hours=2)  # type: ignore[arg-type]
    clock.advance(1800)
    world.stop(inst)
    clock.advance(60)
    world.act(inst, "start")
    world.run(inst)  # a second ready inside the reservation: no second charge
    clock.advance(1800)
    world.terminate(inst)  # early: not refunded
    kinds = [(e.kind, e.seconds, e.amount_micros) for e in world.entries(inst)]
    assert kinds == [("reservation", 7200, 7200 * PER_SECOND), ("storage", 60, 60 * DISK_PER_SECOND)]


def test_time_after_a_reservation_ends_is_billed_per_second(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a", duration_hours=1)
    world.run(inst)
    clock.advance(3600 + 40)  # the timers loop would be terminating it now; the grace is billed
    world.terminate(inst)
    assert [(e.kind, e.seconds) for e in world.entries(inst)] == [("reservation", 3600), ("compute", 40)]


def test_extend_moves_the_expiry_and_charges_the_difference(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a", duration_hours=2)
    world.run(inst)
    expires = as_utc(world.instance(inst).expires_at)  # type: ignore[arg-type]
    clock.advance(1000)
    with state.tx() as session:
        billing.extend(session, clock=clock, inst=session.get(Instance, inst), hours=3)  # type: ignore[arg-type]
    after = world.instance(inst)
    assert as_utc(after.expires_at) == expires + timedelta(hours=3)  # type: ignore[arg-type]
    assert after.reserved_hours == 5
    clock.advance(5 * 3600 - 1000 + 10)
    world.terminate(inst)
    assert [(e.kind, e.seconds) for e in world.entries(inst)] == [
        ("reservation", 7200), ("reservation", 3 * 3600), ("compute", 10)]
    assert _contiguous(world.entries(inst))


def test_extend_is_refused_beyond_a_week_and_without_a_reservation(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    reserved = world.create("a", duration_hours=160)
    plain = world.create("b")
    with pytest.raises(InvalidInput) as too_long, state.tx() as session:
        billing.extend(session, clock=clock, inst=session.get(Instance, reserved), hours=9)  # type: ignore[arg-type]
    assert too_long.value.param == "hours"
    with pytest.raises(InvalidState), state.tx() as session:
        billing.extend(session, clock=clock, inst=session.get(Instance, plain), hours=1)  # type: ignore[arg-type]
    with state.tx() as session:  # not ready yet: the longer reservation is paid in full at ready
        billing.extend(session, clock=clock, inst=session.get(Instance, reserved), hours=8)  # type: ignore[arg-type]
    world.run(reserved)
    [entry] = world.entries(reserved)
    assert entry.seconds == 168 * 3600


def test_a_stopped_instance_on_a_host_without_disk_price_costs_nothing(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock, disk_price=0)
    inst = world.create("a")
    world.run(inst)
    clock.advance(100)
    world.stop(inst)
    clock.advance(10_000)
    world.meter()
    world.terminate(inst)
    assert [e.kind for e in world.entries(inst)] == ["compute"]


def test_ledger_entries_carry_the_labels_of_their_time(state: AppState, clock: FakeClock) -> None:
    world = World(state, clock)
    inst = world.create("a", labels={"team": "ml"})
    world.run(inst)
    clock.advance(4000)
    world.meter()
    with state.tx() as session:
        row = session.get(Instance, inst)
        assert row is not None
        row.labels = {"team": "infra"}
    clock.advance(100)
    world.stop(inst)
    with state.read() as session:
        labels = [e.labels for e in session.scalars(select(LedgerEntry).order_by(LedgerEntry.period_start))]
    assert labels == [{"team": "ml"}, {"team": "infra"}]


def test_a_transition_on_a_stale_instance_continues_from_what_the_meter_committed(state: AppState,
                                                                                   clock: FakeClock) -> None:
    """The agent's report loaded the instance, then the meter closed an hour and committed (it can on
    PostgreSQL): the stop must neither repeat that hour nor write back the old billed total."""
    from sqlalchemy import update

    from coldplate.domain import billing as rules

    world = World(state, clock)
    inst_id = world.create("a")
    world.run(inst_id)
    clock.advance(3600 + 30)
    with state.tx() as session:
        inst = session.get(Instance, inst_id)
        assert inst is not None and inst.seg_start is not None
        start = as_utc(inst.seg_start)
        # What a meter pass in another transaction writes, done here behind the ORM's back:
        [piece] = rules.close("compute", start=start, end=start + timedelta(hours=1), rate_micros=inst.price_micros,
                              billed_before_s=0, run_ends=False)
        session.execute(billing.INSERT_ENTRY, {
            "id": "led_meter", "project_id": inst.project_id, "instance_id": inst.id, "kind": "compute",
            "segment": inst.seg_no, "period_start": piece.period_start, "period_end": piece.period_end,
            "seconds": piece.seconds, "rate_micros": piece.rate_micros, "amount_micros": piece.amount_micros,
            "gpu_type": inst.gpu_type, "labels": {}, "created_at": clock.now()})
        session.execute(update(Instance).where(Instance.id == inst.id).values(
            seg_start=piece.period_end, seg_billed_s=3600, billed_micros=piece.amount_micros)
            .execution_options(synchronize_session=False))
        host = session.get(Hostnode, world.host_id)
        assert host is not None
        actions.report(session, clock=clock, host=host, inst=inst, status=Status.STOPPED)  # it exited
    compute = [e for e in world.entries(inst_id) if e.kind == "compute"]
    assert [e.seconds for e in compute] == [3600, 30] and _contiguous(compute)
    assert world.instance(inst_id).billed_micros == sum(e.amount_micros for e in world.entries(inst_id))
