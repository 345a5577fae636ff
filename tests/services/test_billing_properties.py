"""Property tests: random lifecycles, driven through the real services with a fake clock, billed right.

The expected bill is worked out here from the statuses the instance actually went through (read back
after every step), independently of the billing code: seconds in ready/draining per run (a minute at
least when the run ends in stopped or terminated, none of it inside a paid reservation), seconds in
stopped (once it has been ready) at the disk's rate, nothing for failed, nothing after terminate."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldplate.api.app import create_app
from coldplate.clock import FakeClock, as_utc
from coldplate.domain import billing
from coldplate.services import projects
from coldplate.services.errors import InvalidState, NoCapacity
from coldplate.state import AppState
from tests.services.billing_world import World

# `forward` is what an agent does next (provisioning → starting → ready, draining → stopped).
OPS = ["forward"] * 5 + ["advance"] * 5 + ["stop", "stop", "exited", "start", "start", "terminate", "fail", "meter",
                                          "meter"]
SECONDS = st.one_of(st.integers(min_value=0, max_value=90), st.integers(min_value=0, max_value=5400))
STEPS = st.lists(st.tuples(st.sampled_from(OPS), SECONDS), min_size=1, max_size=40)
_names = itertools.count()


def _apply(world: World, inst: str, op: str, arg: int) -> None:
    status = world.instance(inst).status
    if op == "advance":
        world.clock.advance(arg)
    elif op == "meter":
        before = [(e.id, e.amount_micros) for e in world.entries(inst)]
        world.meter()
        after = [(e.id, e.amount_micros) for e in world.entries(inst)]
        world.meter()
        assert [(e.id, e.amount_micros) for e in world.entries(inst)] == after, "a second meter pass changed the ledger"
        assert after[: len(before)] == before, "the meter rewrote an entry"
    elif op == "forward" and status in ("provisioning", "starting", "draining"):
        world.report(inst, {"provisioning": "starting", "starting": "ready", "draining": "stopped"}[status])
    elif op == "exited" and status == "ready":
        world.report(inst, "stopped")
    elif op == "fail" and status not in ("terminated", "failed", "pending"):
        world.report(inst, "failed")
    elif op in ("stop", "start", "terminate"):
        try:
            world.act(inst, op)
        except (InvalidState, NoCapacity):
            pass


def _expected(timeline: list[tuple[datetime, str]], reserved_hours: int | None,
              disk: bool) -> tuple[int, int, int]:
    """(compute seconds, storage seconds, reservation entries) from the statuses lived through."""
    compute = storage = reservations = 0
    reserved_until: datetime | None = None
    run_start: datetime | None = None
    stopped_at: datetime | None = None
    for (at, status), (_, previous) in zip(timeline[1:], timeline, strict=False):
        if previous == "stopped" and stopped_at is not None:
            storage += int((at - stopped_at).total_seconds())
            stopped_at = None
        if status == "ready" and previous == "starting":
            if reserved_hours and reserved_until is None:
                reserved_until, reservations = at + timedelta(hours=reserved_hours), 1
            run_start = at
        elif run_start is not None and status not in ("ready", "draining"):
            inside = reserved_until is not None and run_start < reserved_until
            billed_from = max(run_start, reserved_until) if inside and reserved_until else run_start
            seconds = max(0, int((at - billed_from).total_seconds()))
            if status in ("stopped", "terminated") and not inside:
                seconds = max(seconds, billing.MINIMUM_RUN_S)
            compute += seconds
            run_start = None
        if status == "stopped" and disk and any(s == "ready" for _, s in timeline if _ <= at):
            stopped_at = at
    return compute, storage, reservations


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, reserved=st.sampled_from([None, None, 1, 2]))
def test_random_lifecycles_are_billed_exactly(state: AppState, clock: FakeClock, steps: list[tuple[str, int]],
                                              reserved: int | None) -> None:
    world = World(state, clock, name=f"p{next(_names)}")
    inst = world.create("x", duration_hours=reserved)
    timeline = [(clock.now(), "provisioning")]
    for op, arg in [*steps, ("terminate", 0), ("forward", 0)]:
        _apply(world, inst, op, arg)
        status = world.instance(inst).status
        if status != timeline[-1][1]:
            timeline.append((clock.now(), status))
    row = world.instance(inst)
    assert row.status == "terminated"
    ledger = world.entries(inst)
    clock.advance(7200)
    world.meter()
    assert world.entries(inst) == ledger or [e.id for e in world.entries(inst)] == [e.id for e in ledger], \
        "something was billed after terminate"
    assert all(as_utc(e.period_start) <= as_utc(row.terminated_at) for e in ledger)  # type: ignore[arg-type]

    compute, storage, reservations = _expected(timeline, reserved, disk=True)
    assert sum(e.seconds for e in ledger if e.kind == "compute") == compute
    assert sum(e.seconds for e in ledger if e.kind == "storage") == storage
    assert sum(1 for e in ledger if e.kind == "reservation") == reservations
    if "ready" not in [s for _, s in timeline]:
        assert ledger == [], "an instance that never became ready (failed, or stopped before) cost something"
    assert row.billed_micros == sum(e.amount_micros for e in ledger)
    for kind in ("compute", "storage"):  # no two pieces of a kind overlap
        pieces = sorted((as_utc(e.period_start), as_utc(e.period_end)) for e in ledger if e.kind == kind)
        assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:], strict=False))


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_the_sum_of_costs_is_the_sum_of_the_ledger(state: AppState, clock: FakeClock,
                                                   steps: list[tuple[str, int]]) -> None:
    world = World(state, clock, name=f"c{next(_names)}")
    for n in range(2):
        inst = world.create(f"x{n}", labels={"team": f"t{n % 2}"})
        for op, arg in steps:
            _apply(world, inst, op, arg * 20)  # long enough to cross months now and then
    world.meter()
    ledger = world.entries()
    with state.tx() as session:  # a key of this project only: its costs are exactly its ledger
        _, key = projects.create_key(session, clock=clock, project_id=world.project_id, name="k",
                                     scopes=["billing:read"])
    months = sorted({billing.month_key(as_utc(e.period_start)) for e in ledger}) or ["2026-01"]
    ledger_total = Decimal(sum(e.amount_micros for e in ledger)) / 1_000_000
    with TestClient(create_app(state)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        for group_by in ("instance", "gpu", "day", "label:team"):
            total = Decimal(0)
            for month in months:
                body = client.get("/v1/costs", params={"month": month, "group_by": group_by}).json()
                assert sum(Decimal(g["amount"]) for g in body["groups"]) == Decimal(body["total"])
                total += Decimal(body["total"])
            assert total == ledger_total, group_by
        usage = client.get("/v1/usage", params={"limit": 1000}).json()["data"]
        assert sorted(u["id"] for u in usage) == sorted(e.id for e in ledger)
        assert sum(Decimal(u["amount"]) for u in usage) == ledger_total
