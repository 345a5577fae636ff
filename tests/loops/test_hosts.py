"""The hosts loop: a silent hostnode goes offline once; after the grace its instances fail with
`host_lost` (each in its own transaction, leased, re-checked); a heartbeat in time saves them."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from coldplate.clock import FakeClock
from coldplate.db.tables import Instance
from coldplate.loops import hosts
from coldplate.services import actions, host_loss, hostnodes
from coldplate.state import AppState
from tests.loops.conftest import World


def _stop(state: AppState, instance_id: str) -> None:
    """Bring an instance to `stopped` the way its agent would report it."""
    with state.tx() as session:
        inst = session.get(Instance, instance_id)
        assert inst is not None and inst.hostnode_id is not None
        host = hostnodes.get_hostnode(session, inst.hostnode_id)
        actions.stop(session, clock=state.clock, inst=inst)
        actions.report(session, clock=state.clock, host=host, inst=inst, status=hostnodes.Status.STOPPED)


def test_a_silent_host_goes_offline_once_and_its_instances_fail_after_the_grace(
        state: AppState, world: World, clock: FakeClock) -> None:
    lost, alive = world.host("lost"), world.host("alive")
    running = world.instance("running", host_id=lost)
    stopped = world.instance("stopped", host_id=lost)
    _stop(state, stopped)
    draining = world.instance("draining", host_id=lost)
    with state.tx() as session:
        inst = session.get(Instance, draining)
        assert inst is not None
        actions.terminate(session, clock=clock, inst=inst)
    elsewhere = world.instance("elsewhere", host_id=alive)
    clock.advance(30)
    assert hosts.run_once(state) == (0, 0)  # at its timeout, not past it
    clock.advance(1)
    world.heartbeat(alive)
    assert hosts.run_once(state) == (1, 0)
    assert hosts.run_once(state) == (0, 0)  # offline once
    assert [e.data["hostnode_id"] for e in world.events(type="hostnode.offline")] == [lost]
    clock.advance(119)
    world.heartbeat(alive)
    assert hosts.run_once(state) == (0, 0)  # within the grace
    clock.advance(1)
    world.heartbeat(alive)
    assert hosts.run_once(state) == (0, 3)  # running, stopped and draining: all held something there
    assert hosts.run_once(state) == (0, 0)
    for iid in (running, stopped):
        inst = world.get(iid)
        assert (inst.status, inst.status_reason, inst.lease_owner) == ("failed", "host_lost", None)
    # its terminate was acknowledged: the loss ends it terminated, as asked, with the failure recorded
    # (domain/lifecycle.FAILURE_ENDS)
    inst = world.get(draining)
    assert (inst.status, inst.status_reason, inst.lease_owner) == ("terminated", "user", None)
    assert inst.failure_reason is not None and "host stopped answering" in inst.failure_reason
    assert world.count(lambda e: e.instance_id, reason="host_lost") == dict.fromkeys([running, stopped], 1)
    assert world.get(elsewhere).status == "provisioning"
    with state.read() as session:
        host = hostnodes.get_hostnode(session, lost)
        assert (host.gpus_used, host.ports_used, host.disk_gb_used) == ([], [], 0)


def test_a_heartbeat_within_the_grace_saves_the_instances(state: AppState, world: World, clock: FakeClock) -> None:
    host = world.host("h1")
    iid = world.instance("i", host_id=host)
    clock.advance(31)
    assert hosts.run_once(state) == (1, 0)
    world.heartbeat(host)
    clock.advance(31)
    assert hosts.run_once(state) == (1, 0)  # silent again: offline again, its grace starts anew
    clock.advance(100)
    assert hosts.run_once(state) == (0, 0)
    world.heartbeat(host)  # back before the grace ran out
    clock.advance(30)
    assert hosts.run_once(state) == (0, 0)
    assert world.get(iid).status == "provisioning"
    assert len(world.events(type="hostnode.offline")) == 2 and world.events(reason="host_lost") == []


def test_mark_offline_rechecks_the_heartbeat(state: AppState, world: World, clock: FakeClock) -> None:
    host = world.host("h1")
    clock.advance(31)
    with state.read() as session:
        assert host_loss.silent_host_ids(session, clock=clock) == [host]
    world.heartbeat(host)  # between the finder's read and the change
    with state.tx() as session:
        assert host_loss.mark_offline(session, clock=clock, host_id=host) is False
    assert world.events(type="hostnode.offline") == []


def test_fail_lost_rechecks_the_host_and_the_instance(state: AppState, world: World, clock: FakeClock) -> None:
    host = world.host("h1")
    back, ended = world.instance("back", host_id=host), world.instance("ended", host_id=host)
    clock.advance(31)
    hosts.run_once(state)
    clock.advance(121)
    with state.tx() as session:
        claimed = host_loss.claim_lost(session, clock=clock, owner="me", grace_seconds=120,
                                       ttl=timedelta(seconds=60), limit=10)
    assert sorted(claimed) == sorted([back, ended])
    _stop(state, ended)  # meanwhile the user stopped and terminated one: it holds nothing any more
    with state.tx() as session:
        inst = session.get(Instance, ended)
        assert inst is not None
        actions.terminate(session, clock=clock, inst=inst)
    assert world.get(ended).status == "terminated"
    with state.tx() as session:
        assert host_loss.fail_lost(session, clock=clock, instance_id=ended, owner="me", grace_seconds=120) is False
    world.heartbeat(host)  # and the host came back
    with state.tx() as session:
        assert host_loss.fail_lost(session, clock=clock, instance_id=back, owner="me", grace_seconds=120) is False
    assert world.events(reason="host_lost") == []
    assert world.get(back).status == "provisioning"


def test_a_failure_on_one_lost_instance_does_not_stop_the_others(state: AppState, world: World, clock: FakeClock,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    host = world.host("h1")
    ids = sorted(world.instance(f"i{n}", host_id=host) for n in range(3))
    broken = ids[0]
    transition = host_loss.transition

    def fault(session: Session, *, inst: Instance, **kwargs: Any) -> None:  # an injected fault
        if inst.id == broken:
            raise RuntimeError("injected")
        transition(session, inst=inst, **kwargs)

    monkeypatch.setattr(host_loss, "transition", fault)
    clock.advance(31)
    hosts.run_once(state)
    clock.advance(120)
    with caplog.at_level(logging.ERROR, logger="coldplate.loops.each"):
        assert hosts.run_once(state) == (0, 2)
    failures = [r for r in caplog.records if r.getMessage() == "failing an instance of a lost host failed"]
    assert [getattr(r, "instance_id", None) for r in failures] == [broken]
    assert [world.get(i).status for i in ids] == ["provisioning", "failed", "failed"]
