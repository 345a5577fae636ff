"""The timers loop: due instances are terminated with reason `expired`, each in its own
transaction, exactly once, re-checked after the claim; one failure does not stop the pass."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from coldplate.clock import FakeClock
from coldplate.db.tables import Instance
from coldplate.loops import timers
from coldplate.services import actions, expiry
from coldplate.state import AppState
from tests.loops.conftest import World

HOUR = 3600


def test_a_due_instance_is_terminated_with_reason_expired_on_time(state: AppState, world: World,
                                                                   clock: FakeClock) -> None:
    host = world.host("h1")
    due = world.instance("due", host_id=host, max_hours=2)
    later = world.instance("later", host_id=host, max_hours=3)
    forever = world.instance("forever", host_id=host)
    clock.advance(2 * HOUR - 1)
    assert timers.run_once(state) == 0
    clock.advance(1)
    assert timers.run_once(state) == 1
    inst = world.get(due)
    assert (inst.status, inst.desired, inst.status_reason) == ("draining", "terminated", "expired")
    assert inst.lease_owner is None  # finished, not left held
    assert [e.instance_id for e in world.events(reason="expired")] == [due]
    assert world.get(later).status == world.get(forever).status == "provisioning"
    assert timers.run_once(state) == 0  # draining to terminated: nothing more to ask of it
    assert len(world.events(reason="expired")) == 1


def test_more_due_instances_than_one_claim_are_all_expired_in_one_pass(state: AppState, world: World,
                                                                        clock: FakeClock,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from coldplate.loops import each

    monkeypatch.setattr(each, "BATCH", 3)
    hosts = [world.host(f"h{n}") for n in range(2)]
    ids = {world.instance(f"i{n}", host_id=hosts[n % 2], max_hours=1) for n in range(10)}
    clock.advance(HOUR)
    assert timers.run_once(state) == 10
    assert world.count(lambda e: e.instance_id, reason="expired") == dict.fromkeys(ids, 1)


def test_expire_rechecks_after_the_claim(state: AppState, world: World, clock: FakeClock) -> None:
    """A user terminated it between the claim and the expiry: no second terminate, no `expired`."""
    iid = world.instance("i", host_id=world.host("h1"), max_hours=1)
    clock.advance(HOUR)
    with state.tx() as session:
        assert expiry.claim_due(session, clock=clock, owner="me", ttl=timedelta(seconds=60), limit=10) == [iid]
    with state.tx() as session:
        inst = session.get(Instance, iid)
        assert inst is not None
        actions.terminate(session, clock=clock, inst=inst, reason="user")
    with state.tx() as session:
        assert expiry.expire(session, clock=clock, instance_id=iid, owner="me") is False
    assert world.events(reason="expired") == []
    assert world.get(iid).lease_owner is None


def test_a_row_leased_by_another_owner_waits_for_its_lease_to_run_out(state: AppState, world: World,
                                                                       clock: FakeClock) -> None:
    iid = world.instance("i", host_id=world.host("h1"), max_hours=1)
    clock.advance(HOUR)
    with state.tx() as session:  # another replica claimed it and then died
        expiry.claim_due(session, clock=clock, owner="dead-replica", ttl=timedelta(seconds=60), limit=10)
    assert timers.run_once(state) == 0
    assert world.get(iid).status == "provisioning"
    clock.advance(60)
    assert timers.run_once(state) == 1
    assert world.get(iid).status_reason == "expired"
    with state.tx() as session:  # the dead replica's late finish writes nothing
        assert expiry.expire(session, clock=clock, instance_id=iid, owner="dead-replica") is False
    assert len(world.events(reason="expired")) == 1


def test_a_failure_on_one_instance_is_logged_and_the_pass_goes_on(state: AppState, world: World, clock: FakeClock,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    host = world.host("h1")
    ids = sorted(world.instance(f"i{n}", host_id=host, max_hours=1) for n in range(3))
    broken = ids[1]
    terminate = actions.terminate

    def fault(session: object, *, inst: Instance, **kwargs: object) -> Instance:  # an injected fault
        if inst.id == broken:
            raise RuntimeError("injected")
        return terminate(session, inst=inst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(actions, "terminate", fault)
    clock.advance(HOUR)
    with caplog.at_level(logging.ERROR, logger="coldplate.loops.each"):
        assert timers.run_once(state) == 2
    failures = [r for r in caplog.records if r.getMessage() == "expiring an instance failed"]
    assert [getattr(r, "instance_id", None) for r in failures] == [broken]
    assert world.get(broken).status == "provisioning"  # its transaction rolled back whole
    assert world.get(broken).lease_owner is not None  # still leased: retried once the lease runs out
    monkeypatch.setattr(actions, "terminate", terminate)
    assert timers.run_once(state) == 0
    clock.advance(60)
    assert timers.run_once(state) == 1
    assert sorted(e.instance_id for e in world.events(reason="expired")) == ids
