"""Billing segments and the ledger: opened and closed with the transitions, closed hourly by the meter.

An instance holds at most one open segment (`seg_kind`, `seg_start`, `seg_rate_micros`, `seg_billed_s`
on its row). Every ledger entry is keyed by (instance, kind, segment number, period start): a second
close of the same piece, by a retried report or a meter pass racing a transition, is a unique-key
violation that rolls its transaction back, and the piece and the row's move of `seg_start` commit
together or not at all, so nothing is charged twice and no gap is left.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from coldplate.clock import Clock, as_utc
from coldplate.db.tables import Hostnode, Instance, LedgerEntry
from coldplate.domain import billing
from coldplate.domain.billing import COMPUTE, STORAGE, Charge
from coldplate.domain.lifecycle import Status
from coldplate.ids import new_id
from coldplate.services import outbox, signals
from coldplate.services.errors import InvalidInput, InvalidState

S = Status
BILLED = frozenset({S.READY, S.DRAINING})  # compute runs in these states
RUN_ENDS = frozenset({S.STOPPED, S.TERMINATED})  # the 60-second minimum applies when a run ends here
CLOSE_AFTER = timedelta(hours=1)  # the meter closes segments open longer than this
MAX_RESERVED_HOURS = 168
RESERVATION_SEGMENT = 0  # reservation entries are told apart by their period start
INSERT_ENTRY = insert(cast(Table, LedgerEntry.__table__))


def on_transition(session: Session, *, clock: Clock, inst: Instance, current: Status, target: Status) -> None:
    """Close the segment `target` ends and open the one it begins, in the transition's transaction."""
    now = clock.now()
    if inst.seg_kind is not None:
        _refresh_segment(session, inst)
    if inst.seg_kind == COMPUTE and target not in BILLED:
        _close(session, clock=clock, inst=inst, end=now, final=True, minimum=target in RUN_ENDS)
    elif inst.seg_kind == STORAGE and target is not S.STOPPED:
        _close(session, clock=clock, inst=inst, end=now, final=True, minimum=False)
    if target is S.READY and current is not S.READY:
        _open_compute(session, clock=clock, inst=inst, now=now)
    elif target is S.STOPPED and inst.seg_kind is None:
        _open_storage(session, inst=inst, now=now)


def _refresh_segment(session: Session, inst: Instance) -> None:
    """Lock the row and take its segment as committed: the meter may have closed a piece since the
    caller loaded the instance (PostgreSQL, READ COMMITTED). Without this the close would repeat
    that piece (a unique-key error) and write back a stale `billed_micros`."""
    row = session.execute(select(Instance.seg_kind, Instance.seg_no, Instance.seg_start, Instance.seg_rate_micros,
                                 Instance.seg_billed_s, Instance.billed_micros)
                          .where(Instance.id == inst.id).with_for_update()).one()
    inst.seg_kind, inst.seg_no, inst.seg_start = row.seg_kind, row.seg_no, row.seg_start
    inst.seg_rate_micros, inst.seg_billed_s = row.seg_rate_micros, row.seg_billed_s
    inst.billed_micros = row.billed_micros


def _open(inst: Instance, kind: str, start: datetime, rate_micros: int, billed_s: int) -> None:
    inst.seg_no += 1
    inst.seg_kind, inst.seg_start, inst.seg_rate_micros, inst.seg_billed_s = kind, start, rate_micros, billed_s


def _open_compute(session: Session, *, clock: Clock, inst: Instance, now: datetime) -> None:
    if inst.reserved_hours and inst.reserved_until is None:  # the first ready of a reservation: pay it all now
        charge = billing.reservation(start=now, hours=inst.reserved_hours, rate_micros=inst.price_micros)
        _write(session, clock=clock, inst=inst, charge=charge, segment=RESERVATION_SEGMENT)
        inst.reserved_until = charge.period_end
        cap = None if inst.max_hours is None else as_utc(inst.created_at) + timedelta(hours=inst.max_hours)
        inst.expires_at = charge.period_end if cap is None else min(cap, charge.period_end)
    start, billed_s = billing.whole_second(now), 0
    if inst.reserved_until is not None and as_utc(inst.reserved_until) > start:
        # Inside a paid reservation nothing is charged per second; the minimum is already met.
        start, billed_s = as_utc(inst.reserved_until), (inst.reserved_hours or 0) * billing.SECONDS_PER_HOUR
    _open(inst, COMPUTE, start, inst.price_micros, billed_s)


def _open_storage(session: Session, *, inst: Instance, now: datetime) -> None:
    """The disk of a stopped instance, priced at its host's disk rate; not before it has ever been ready."""
    if inst.ready_at is None:
        return
    host = session.get(Hostnode, inst.hostnode_id) if inst.hostnode_id else None
    rate = host.disk_gb_price_micros * inst.disk_gb if host is not None else 0
    if rate > 0:
        _open(inst, STORAGE, billing.whole_second(now), rate, 0)


def _charges(inst: Instance, end: datetime, minimum: bool) -> list[Charge]:
    assert inst.seg_kind is not None and inst.seg_start is not None and inst.seg_rate_micros is not None
    return billing.close(inst.seg_kind, start=as_utc(inst.seg_start), end=end, rate_micros=inst.seg_rate_micros,
                         billed_before_s=inst.seg_billed_s, run_ends=minimum)


def _close(session: Session, *, clock: Clock, inst: Instance, end: datetime, final: bool, minimum: bool) -> None:
    """Charge the segment up to `end`; `final` ends it, `minimum` tops a compute run up to a minute."""
    charges = _charges(inst, end, minimum)
    for charge in charges:
        _write(session, clock=clock, inst=inst, charge=charge, segment=inst.seg_no)
    if final:
        inst.seg_kind, inst.seg_start, inst.seg_rate_micros, inst.seg_billed_s = None, None, None, 0
    elif charges:
        inst.seg_start = charges[-1].period_end
        inst.seg_billed_s += sum(c.seconds for c in charges)


def _write(session: Session, *, clock: Clock, inst: Instance, charge: Charge, segment: int) -> None:
    session.connection().execute(INSERT_ENTRY, {
        "id": new_id("led"), "project_id": inst.project_id, "instance_id": inst.id, "kind": charge.kind,
        "segment": segment, "period_start": charge.period_start, "period_end": charge.period_end,
        "seconds": charge.seconds, "rate_micros": charge.rate_micros, "amount_micros": charge.amount_micros,
        "gpu_type": inst.gpu_type, "labels": dict(inst.labels), "created_at": clock.now(),
    })
    inst.billed_micros += charge.amount_micros


def open_charges(inst: Instance, now: datetime) -> list[Charge]:
    """What closing the open segment now would charge (with the minimum): the live part of the cost."""
    if inst.seg_kind is None:
        return []
    return _charges(inst, now, minimum=True)


def cost_so_far(inst: Instance, now: datetime) -> int:
    return inst.billed_micros + sum(c.amount_micros for c in open_charges(inst, now))


def due_ids(session: Session, *, now: datetime) -> list[str]:
    """Instances whose open segment began more than an hour ago."""
    return list(session.scalars(select(Instance.id).where(Instance.seg_start <= now - CLOSE_AFTER)))


def close_due(session: Session, *, clock: Clock, instance_id: str) -> int:
    """The meter's hourly close of one instance's segment; returns the pieces written (0 when nothing is due)."""
    inst = session.scalars(select(Instance).where(Instance.id == instance_id).with_for_update()).first()
    now = clock.now()
    if inst is None or inst.seg_start is None or as_utc(inst.seg_start) > now - CLOSE_AFTER:
        return 0
    before = inst.seg_no, inst.seg_billed_s
    _close(session, clock=clock, inst=inst, end=now, final=False, minimum=False)
    session.flush()
    return 0 if (inst.seg_no, inst.seg_billed_s) == before else 1


def extend(session: Session, *, clock: Clock, inst: Instance, hours: int) -> Instance:
    """Lengthen a reservation by `hours`: move `expires_at` and charge the difference (if already paid)."""
    if inst.reserved_hours is None:
        raise InvalidState(f"instance {inst.id} has no reservation (duration_hours) to extend", param="hours")
    if Status(inst.status) in (S.TERMINATED, S.FAILED, S.DRAINING):
        raise InvalidState(f"cannot extend an instance that is {inst.status}", param="status")
    if inst.reserved_hours + hours > MAX_RESERVED_HOURS:
        raise InvalidInput(f"a reservation is at most {MAX_RESERVED_HOURS} hours in all; it has "
                           f"{inst.reserved_hours}", param="hours")
    now = clock.now()
    if inst.reserved_until is not None:
        until = as_utc(inst.reserved_until)
        if until <= now:
            raise InvalidState(f"the reservation of {inst.id} has ended", param="hours")
        charge = billing.reservation(start=until, hours=hours, rate_micros=inst.price_micros)
        _write(session, clock=clock, inst=inst, charge=charge, segment=RESERVATION_SEGMENT)
        inst.reserved_until = charge.period_end
        if inst.seg_kind == COMPUTE and inst.seg_start is not None and as_utc(inst.seg_start) == until:
            inst.seg_start = charge.period_end
            inst.seg_billed_s += charge.seconds
    inst.reserved_hours += hours
    if inst.expires_at is not None:
        inst.expires_at = as_utc(inst.expires_at) + timedelta(hours=hours)
    inst.updated_at = now
    outbox.record(session, clock=clock, project_id=inst.project_id, instance_id=inst.id,
                  type="instance.reservation_extended",
                  data={"hours": hours, "reserved_hours": inst.reserved_hours,
                        "expires_at": None if inst.expires_at is None else inst.expires_at.isoformat()})
    signals.touch(session, inst.id)
    session.flush()
    return inst
